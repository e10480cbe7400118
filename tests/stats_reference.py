"""An independent, slow, obviously-correct model of the stats API, computed in Python over the
events as stored (read back from the table), for the test_stats_* modules.

Bucket placement here walks wall-clock time per event; the service computes a list of edges
once and lets SQL place rows with width_bucket. Two different algorithms, one answer.
"""
from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import httpx

UTC = timezone.utc
DIM_COLUMN = {"page": "page", "os": "os", "browser": "browser", "device": "device", "referrer": "referrer_host",
              # issue 11 part 1
              "name": "name", "hostname": "hostname", "country": "country", "utm_source": "utm_source",
              "utm_medium": "utm_medium", "utm_campaign": "utm_campaign"}

USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "",
]
PAGES = ["/", "/pricing", "/blog", "/blog/a", "/blog/b_1", "/docs/x", "/docs/y%z", "/about"]
REFERRERS = ["", "https://www.google.com/search", "https://news.ycombinator.com/", "https://bing.com/", "t.co/x"]


@dataclass(frozen=True)
class Ev:
    time: datetime
    page: str
    os: str
    browser: str
    device: str
    referrer_host: str
    session_id: str | None
    duration: int | None
    is_bot: bool
    name: str = "pageview"
    hostname: str = ""
    country: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""


def last_year_transitions(tz: ZoneInfo, year: int) -> list[datetime]:
    """UTC instants at which the zone's offset changed during `year` (hour resolution, refined)."""
    out = []
    t = datetime(year, 1, 1, tzinfo=UTC)
    off = t.astimezone(tz).utcoffset()
    while t.year == year:
        n = t + timedelta(hours=1)
        if n.astimezone(tz).utcoffset() != off:
            lo, hi = t, n
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                mid = mid.replace(second=0, microsecond=0)
                if mid.astimezone(tz).utcoffset() == off:
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
            off = n.astimezone(tz).utcoffset()
        t = n
    return out


HOSTS = ["shop.example", "blog.example", "Docs.Example:8443"]
NAMES = ["Signup", "Outbound Link: Click", "File Download"]
UTMS = ["", "", "?utm_source=news&utm_medium=email&utm_campaign=fall",
        "?utm_source=google&utm_medium=cpc", "?utm_campaign=x%20y&ref=1"]


def with_fields(rng: random.Random, ev: dict) -> dict:
    """The event with issue 11's fields: a page URL (host, UTM) and, for one in five, a custom
    event name and props."""
    ev["url"] = f"https://{rng.choice(HOSTS)}{ev['page']}{rng.choice(UTMS)}"
    if rng.random() < 0.2:
        ev["name"] = rng.choice(NAMES)
        ev["props"] = {"plan": rng.choice(["pro", "free"]), "n": rng.randint(0, 3)}
    return ev


def make_events(rng: random.Random, windows: list[tuple[datetime, datetime]], n: int,
                sessions: int = 250, fields: bool = False) -> list[dict]:
    """API payloads: sessions of a few events, spread over the windows, at whole seconds (with
    `fields`, also issue 11's url, name and props: with_fields)."""
    out = []
    while len(out) < n:
        lo, hi = rng.choice(windows)
        t0 = lo + timedelta(seconds=rng.randrange(int((hi - lo).total_seconds())))
        sid = None if rng.random() < 0.1 else f"s{rng.randrange(sessions)}"
        ua = rng.choice(USER_AGENTS)
        for k in range(rng.randint(1, 6)):
            t = t0 + timedelta(seconds=k * rng.randint(30, 1500))
            if t >= hi:
                break
            out.append({"id": str(uuid.UUID(int=rng.getrandbits(128))), "time": t.isoformat(),
                        "page": rng.choice(PAGES), "user_agent": ua,
                        "referrer": rng.choice(REFERRERS) if k == 0 else "",
                        "session_id": sid, "duration": rng.choice([0, 0, 1, 5, rng.randint(0, 900)])})
            if fields:
                with_fields(rng, out[-1])
    return out[:n]


def post_batches(client: httpx.Client, events: list[dict], size: int = 1000, headers: dict | None = None) -> None:
    for i in range(0, len(events), size):
        r = client.post("/api/events/batch", json=events[i:i + size], headers=headers)
        assert r.status_code in (200, 201), r.text


def stored_events(conn) -> list[Ev]:
    rows = conn.execute("SELECT time, page, os, browser, device, referrer_host, session_id, duration, is_bot, "
                        "name, hostname, country, utm_source, utm_medium, utm_campaign FROM events").fetchall()
    return [Ev(*r) for r in rows]


# -- buckets -------------------------------------------------------------------------------
def _instants(wall: datetime, tz: ZoneInfo) -> list[datetime]:
    out = []
    for fold in (0, 1):
        t = wall.replace(tzinfo=tz, fold=fold)
        if t.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall:
            out.append(t.astimezone(UTC))
    return out


def bucket_start(t: datetime, interval: tuple[str, int], tz: ZoneInfo) -> datetime:
    """The start of the bucket holding instant t: the last edge at or before t."""
    unit, n = interval
    local = t.astimezone(tz)
    if unit == "months":
        m = (local.year - 2000) * 12 + local.month - 1
        m -= m % n
        return datetime(2000 + m // 12, m % 12 + 1, 1, tzinfo=tz).astimezone(UTC)
    if unit == "days":
        d = local.date()
        d -= timedelta(days=(d - date(2000, 1, 3)).days % n)
        return datetime.combine(d, time(0), tzinfo=tz).astimezone(UTC)
    if 86400 % n == 0:  # seconds dividing a day: walk back over wall-clock multiples
        wall = local.replace(tzinfo=None)
        secs = wall.hour * 3600 + wall.minute * 60 + wall.second
        cand = datetime.combine(wall.date(), time(0)) + timedelta(seconds=secs - secs % n)
        while True:
            ok = [i for i in _instants(cand, tz) if i <= t]
            if ok:
                return max(ok)
            cand -= timedelta(seconds=n)
    origin = datetime(2000, 1, 3, tzinfo=tz).astimezone(UTC)
    k = (t - origin) // timedelta(seconds=n)
    return origin + k * timedelta(seconds=n)


def all_buckets(start: datetime, end: datetime, interval, tz) -> list[datetime]:
    """Every bucket overlapping [start, end), found by probing each minute (each quarter hour for
    buckets of 15 minutes or more: every edge in the zones tested falls on a quarter hour)."""
    step = timedelta(minutes=1 if interval == ("seconds", interval[1]) and interval[1] < 900 else 15)
    seen, t = [], start
    while t < end:
        b = bucket_start(t, interval, tz)
        if not seen or seen[-1] != b:
            seen.append(b)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        t = epoch + ((t - epoch) // step + 1) * step
    return seen


# -- metrics -------------------------------------------------------------------------------
def percentile(values: list[int], f: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    pos = f * (len(v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def metric(evs: list[Ev], name: str):
    durations = [e.duration for e in evs if e.duration is not None]
    if name == "events":
        return len(evs)
    if name == "unique_sessions":
        return len({e.session_id for e in evs if e.session_id is not None})
    if name == "avg_duration":
        return sum(durations) / len(durations) if durations else None
    if name == "median_duration":
        return percentile(durations, 0.5)
    return percentile(durations, 0.95)


def matches(e: Ev, filters: dict, include_bots: bool) -> bool:
    if e.is_bot and not include_bots:
        return False
    for name, values in filters.items():
        if not values:
            continue
        if name == "page_prefix":
            if not any(e.page.startswith(p) for p in values):
                return False
        elif getattr(e, DIM_COLUMN[name]) not in values:
            return False
    return True


def select(events: list[Ev], start, end, filters, include_bots) -> list[Ev]:
    return [e for e in events if start <= e.time < end and matches(e, filters, include_bots)]


def group_key(e: Ev, group_by) -> tuple:
    return tuple(getattr(e, DIM_COLUMN[d]) for d in group_by)


def grouped(evs, group_by) -> dict[tuple, list[Ev]]:
    out: dict[tuple, list[Ev]] = {}
    for e in evs:
        out.setdefault(group_key(e, group_by), []).append(e)
    return out


def ranked(groups: dict[tuple, list[Ev]], order_by: str, desc: bool) -> list[tuple]:
    vals = {k: metric(v, order_by) for k, v in groups.items()}
    keys = sorted(groups)  # tie-break: group values ascending (byte order)
    present = [k for k in keys if vals[k] is not None]
    present.sort(key=lambda k: vals[k], reverse=desc)  # stable: ties keep key order
    return present + [k for k in keys if vals[k] is None]


def approx_equal(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b
