"""The dashboard in a real headless Chromium (boot/chromium.sh; Playwright through
executable_path), against a real server with its own schema and seeded data (ingested through
the API: different pages, user agents and referrers, now and in the previous period).

Every number on the page (`data-metric` / `data-value`) is compared with the API's answer to
the same question, asked by the test itself from the range the page shows (`#dash[data-start]`,
`data-end`, `data-timezone`) and the filters the test expects, so a page that asks the wrong
question fails. Which tiles and panels must be there is read from the server's OpenAPI schema:
a panel the API supports and the page does not show fails the test."""
from __future__ import annotations

import os
import shutil
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from analytics import catalog
from support import Server, chromium_path, drop_schema, new_schema_name
from test_dashboard_http import keys_cli, poll_status, share_link

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                     "(requirements-dev.txt; `make test` installs it)")


CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=(
    "no Chromium: boot/chromium.sh could not install Debian's chromium package here (needs apt "
    "and root or sudo); set CHROMIUM_PATH to run the browser tests"))

VISIT_METRICS = {m.name for m in catalog.METRICS if m.kind == "visit"}

# What the issue asks the page to show, by the API's names. The page must show each of them
# that this server's API offers (its OpenAPI enums), and numbers for nothing else.
TILE_METRICS = ("unique_visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration",
                "median_duration")
PANEL_DIMENSIONS = ("page", "entry_page", "exit_page", "referrer", "utm_source", "country", "os",
                    "browser", "device", "name")

UAS = {
    "linux": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "iphone": ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
               "Version/17.4 Mobile/15E148 Safari/604.1"),
}


def _seed_events() -> list[dict]:
    """Three pages, three user agents, three referrers (one direct), over the last few days and
    the week before (the previous period of a 7-day view)."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    pages = ["/", "/pricing", "/blog/a-long-article-title-that-must-wrap-on-a-phone-screen"]
    refs = ["https://www.google.com/search?q=x", "https://news.ycombinator.com/item?id=1", ""]
    events = []
    for i in range(60):
        ua_name = list(UAS)[i % 3]
        events.append({
            "page": pages[(i * 7) % 3 if i % 4 else 0], "user_agent": UAS[ua_name],
            "referrer": refs[(i // 2) % 3], "session_id": f"s{i % 17}", "duration": (i * 13) % 240,
            "ip_address": f"203.0.113.{i % 23}",
            "time": (now - timedelta(hours=1 + (i * 5) % 100 if i % 5 else 24 * 8 + i)).isoformat().replace("+00:00", "Z"),
        })
    return events


@pytest.fixture(scope="module")
def srv(db_url, tmp_path_factory):
    schema = new_schema_name("dash")
    s = Server(db_url, schema, env={"MAX_EVENT_AGE_DAYS": "30"},
               log_path=tmp_path_factory.mktemp("dash") / "server.log").start()
    try:
        r = httpx.post(s.url + "/api/events/batch", json=_seed_events(), headers={"Authorization": f"Bearer {s.key['ingest']}"})
        assert r.status_code in (200, 201, 202), r.text
        yield s
    finally:
        s.stop()
        drop_schema(db_url, schema)


def _enum(items: dict) -> list:
    """An OpenAPI enum, also inside anyOf (group_by: the catalog's dimensions or `prop:<key>`)."""
    return items["enum"] if "enum" in items else next(a["enum"] for a in items["anyOf"] if "enum" in a)


def answerable(metric: str, filters) -> bool:
    """What the page asks: visit metrics only under filters a visit row carries (the API answers
    others from raw events, which the page leaves out); the others any filter but the
    visit-only ones (entry/exit page)."""
    if metric in VISIT_METRICS:
        return all(k in catalog.VISIT_DIMENSIONS for k, _ in filters)
    return not any(k in catalog.VISIT_ONLY_DIMENSIONS for k, _ in filters)


@pytest.fixture(scope="module")
def offered(srv) -> dict[str, set[str]]:
    params = httpx.get(srv.url + "/openapi.json").json()["paths"]["/api/v1/stats/breakdown"]["get"]["parameters"]
    enum = {p["name"]: set(_enum(p["schema"]["items"])) for p in params if p["name"] in ("metrics", "group_by")}
    return {"tiles": enum["metrics"] & set(TILE_METRICS), "panels": enum["group_by"] & set(PANEL_DIMENSIONS)}


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


def _open(browser, url: str, *, key: str | None = None, viewport=None):
    """A fresh context (its own localStorage) on `url`; the read key stored as the page keeps it."""
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
    if key:
        context.add_init_script(f"localStorage.setItem('analytics_dashboard_key', {key!r})")
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    return context, page, errors


def _wait_loaded(page, loads: int = 1) -> None:
    page.wait_for_function(f"() => {{ const d = document.getElementById('dash');"
                           f" return d.dataset.state == 'ready' && Number(d.dataset.loads) >= {loads}; }}",
                           timeout=30_000)


def _loads(page) -> int:
    return int(page.eval_on_selector("#dash", "d => d.dataset.loads || 0"))


def _num(text: str):
    return None if text == "" else float(text)


def _api(srv, kind: str, params: list[tuple[str, str]]) -> dict:
    r = httpx.get(f"{srv.url}/api/v1/stats/{kind}", params=params, headers=srv.headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def check_every_number(page, srv, offered, filters: list[tuple[str, str]]) -> int:
    """Every data-metric on the page equals the API's number for the page's range and `filters`;
    the tiles and panels are exactly those the API offers. Returns how many numbers were checked."""
    assert page.locator("[data-error]").count() == 0, page.inner_text("#panels")
    dash = page.eval_on_selector("#dash", "d => ({...d.dataset})")
    base = [("start", dash["start"]), ("end", dash["end"]), ("timezone", dash["timezone"]), *filters]
    checked = 0

    tiles = page.eval_on_selector_all("#tiles [data-metric]", "els => els.map(e => [e.dataset.metric, "
                                      "e.dataset.kind || 'current', e.dataset.value])")
    shown = {m for m in offered["tiles"] if answerable(m, filters)}
    assert {m for m, kind, _ in tiles if kind == "current"} == shown
    # The others are there, saying the filters leave them unanswerable (and carry no number).
    assert set(page.eval_on_selector_all("#tiles .tile.na", "els => els.map(e => e.dataset.tile)")) == offered["tiles"] - shown
    row = {"previous": {}}
    for group in ([m for m in sorted(shown) if m not in VISIT_METRICS], [m for m in sorted(shown) if m in VISIT_METRICS]):
        if group:
            got = _api(srv, "totals", [*base, *[("metrics", m) for m in group], ("compare", "previous")])["results"][0]
            row["previous"].update(got.pop("previous"))
            row.update(got)
    for metric, kind, value in tiles:
        cur, prev = row[metric], row["previous"][metric]
        if kind == "current":
            assert _num(value) == cur, (metric, value, cur)
        elif kind == "previous":
            assert _num(value) == prev, (metric, value, prev)
        else:  # the change, computed by the page from the two
            assert _num(value) == pytest.approx((cur - prev) / prev), (metric, value, cur, prev)
        checked += 1

    panels = page.eval_on_selector_all("#panels [data-dimension]", """els => els.map(p => [p.dataset.dimension,
        [...p.querySelectorAll('li[data-key]')].map(li => {
            const n = li.querySelector('[data-metric]'); return [li.dataset.key, n.dataset.metric, n.dataset.value]; })])""")
    unanswerable = set(page.eval_on_selector_all("#panels [data-unanswerable]", "els => els.map(p => p.dataset.dimension)"))
    row_metric = {d: "visits" if d in catalog.VISIT_ONLY_DIMENSIONS else "events" for d in offered["panels"]}
    assert unanswerable == {d for d in offered["panels"] if not answerable(row_metric[d], filters)}
    assert {d for d, _ in panels} == offered["panels"]
    for dimension, rows in panels:
        if dimension in unanswerable:
            assert rows == []
            continue
        metrics = {m for _, m, _ in rows} or {row_metric[dimension]}
        assert len(metrics) == 1, rows
        (metric,) = metrics
        want = _api(srv, "breakdown", [*base, ("group_by", dimension), ("metrics", metric), ("limit", "10")])
        assert [(k, _num(v)) for k, _, v in rows] == [(r[dimension], r[metric]) for r in want["results"]], dimension
        checked += len(rows)

    chart_metric = next(m for m in ("unique_visitors", "pageviews", "visits", "events") if answerable(m, filters))
    series = _api(srv, "timeseries", [*base, ("interval", dash["interval"]), ("metrics", chart_metric)])
    assert page.eval_on_selector("#chart", "c => c.dataset.points") == str(len(series["results"]))
    return checked


def _url_filters(page) -> list[tuple[str, str]]:
    return [(k, v) for k, v in parse_qsl(urlsplit(page.url).query, keep_blank_values=True)
            if k not in ("period", "from", "to", "tz", "interval")]


def test_every_number_equals_the_api_and_a_page_row_filters_every_panel(srv, offered, browser, tmp_path):
    context, page, errors = _open(browser, srv.url + "/dashboard?period=7d&tz=UTC", key=srv.key["read"])
    _wait_loaded(page)
    assert page.eval_on_selector("#dash", "d => d.dataset.start") < page.eval_on_selector("#dash", "d => d.dataset.end")
    assert check_every_number(page, srv, offered, []) > 10
    # The page marks the end of its first full draw (what bench/dashboard.py measures).
    assert page.evaluate("() => performance.getEntriesByName('dashboard-ready').length") >= 1
    assert page.locator("#chart canvas").count() == 1

    shot = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot: {shot}")

    # Click the /pricing row of the pages panel: every panel is filtered by it.
    loads = _loads(page)
    page.click("#panels [data-dimension=page] li[data-key='/pricing'] button")
    _wait_loaded(page, loads + 1)
    assert page.locator(".chip[data-filter=page][data-value='/pricing']").count() == 1
    assert _url_filters(page) == [("page", "/pricing")]
    check_every_number(page, srv, offered, [("page", "/pricing")])
    # The visit tiles say the page filter leaves them to a raw read the page does not make.
    assert page.locator("#tiles .tile.na").count() > 0
    # The filter really changed the numbers (else this would prove nothing).
    assert page.eval_on_selector("#panels [data-dimension=page]", "p => p.querySelectorAll('li[data-key]').length") == 1

    # A second filter from another panel (the OS), then the first one's chip removed.
    os_name = page.eval_on_selector("#panels [data-dimension=os] li[data-key]", "li => li.dataset.key")
    loads = _loads(page)
    page.click(f"#panels [data-dimension=os] li[data-key='{os_name}'] button")
    _wait_loaded(page, loads + 1)
    assert _url_filters(page) == [("page", "/pricing"), ("os", os_name)]
    check_every_number(page, srv, offered, [("page", "/pricing"), ("os", os_name)])

    loads = _loads(page)
    page.click(".chip[data-filter=page] button")
    _wait_loaded(page, loads + 1)
    assert page.locator(".chip").count() == 1 and _url_filters(page) == [("os", os_name)]
    check_every_number(page, srv, offered, [("os", os_name)])

    # The URL is the view: opened elsewhere, it shows the same filter.
    other, page2, errors2 = _open(browser, page.url, key=srv.key["read"])
    _wait_loaded(page2)
    assert page2.locator(f".chip[data-filter=os][data-value='{os_name}']").count() == 1
    check_every_number(page2, srv, offered, [("os", os_name)])
    other.close()

    # An entry page: the visit numbers follow it, the event panels say they cannot.
    if "entry_page" in offered["panels"]:
        entry = page.eval_on_selector("#panels [data-dimension=entry_page] li[data-key]", "li => li.dataset.key")
        loads = _loads(page)
        page.click(f"#panels [data-dimension=entry_page] li[data-key='{entry}'] button")
        _wait_loaded(page, loads + 1)
        assert _url_filters(page) == [("os", os_name), ("entry_page", entry)]
        check_every_number(page, srv, offered, [("os", os_name), ("entry_page", entry)])
        assert page.locator("#panels [data-unanswerable]").count() > 0
    context.close()
    assert errors == [] and errors2 == []


def test_presets_interval_and_time_zone(srv, offered, browser):
    context, page, errors = _open(browser, srv.url + "/dashboard?period=7d&tz=UTC", key=srv.key["read"])
    _wait_loaded(page)
    for period, interval in (("today", "hour"), ("yesterday", "hour"), ("30d", "day"), ("month", "day")):
        loads = _loads(page)
        page.select_option("#period", period)
        _wait_loaded(page, loads + 1)
        assert page.eval_on_selector("#dash", "d => d.dataset.interval") == interval
        assert dict(parse_qsl(urlsplit(page.url).query))["period"] == period
    # Custom dates: inclusive in the form, the API's end is exclusive.
    loads = _loads(page)
    page.select_option("#period", "custom")
    _wait_loaded(page, loads + 1)
    today = datetime.now(timezone.utc).date()
    page.fill("#from", str(today - timedelta(days=3)))
    page.fill("#to", str(today))
    page.dispatch_event("#to", "change")
    page.wait_for_function(f"() => document.getElementById('dash').dataset.end == '{today + timedelta(days=1)}'")
    _wait_loaded(page, _loads(page))
    assert page.eval_on_selector("#dash", "d => d.dataset.start") == str(today - timedelta(days=3))
    loads = _loads(page)
    page.select_option("#interval", "week")
    _wait_loaded(page, loads + 1)
    # Another IANA zone: the numbers are the API's in that zone.
    loads = _loads(page)
    page.fill("#tz", "Asia/Kolkata")
    page.dispatch_event("#tz", "change")
    _wait_loaded(page, loads + 1)
    assert page.eval_on_selector("#dash", "d => d.dataset.timezone") == "Asia/Kolkata"
    check_every_number(page, srv, offered, [])
    context.close()
    assert errors == []


def test_browser_time_zone_is_the_default(srv, offered, browser):
    context = browser.new_context(timezone_id="America/New_York")
    context.add_init_script(f"localStorage.setItem('analytics_dashboard_key', {srv.key['read']!r})")
    page = context.new_page()
    page.goto(srv.url + "/dashboard")
    _wait_loaded(page)
    assert page.eval_on_selector("#dash", "d => d.dataset.timezone") == "America/New_York"
    check_every_number(page, srv, offered, [])
    context.close()


def test_key_entered_once_kept_and_forgotten(srv, offered, browser):
    context, page, errors = _open(browser, srv.url + "/dashboard")
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#key", srv.key["read"])
    page.click("#login button[type=submit]")
    _wait_loaded(page)
    assert page.evaluate("() => localStorage.getItem('analytics_dashboard_key')") == srv.key["read"]
    page.reload()
    _wait_loaded(page)  # no prompt the second time
    page.click("#forget")
    page.wait_for_selector("#login:not([hidden])")
    assert page.evaluate("() => localStorage.length") == 0
    context.close()
    assert errors == []


def test_share_link_works_and_a_revoked_one_does_not(srv, offered, browser):
    name, token = share_link(srv)
    assert poll_status(srv.url + "/api/v1/stats/totals", {"Authorization": f"Bearer {token}"}, 200) == 200
    requests: list = []
    context, page, errors = _open(browser, f"{srv.url}/dashboard?period=7d&tz=UTC#share={token}")
    page.on("request", lambda r: requests.append(r))
    _wait_loaded(page)
    check_every_number(page, srv, offered, [])
    assert page.evaluate("() => localStorage.length") == 0  # a link's token is not kept
    assert not page.is_visible("#forget")
    page.reload()
    _wait_loaded(page)
    # The token goes in the Authorization header only: never in a URL or a Referer.
    assert requests and all(token not in r.url and token not in (r.headers.get("referer") or "") for r in requests)
    assert errors == []

    assert keys_cli(srv, "revoke", name).returncode == 0
    assert poll_status(srv.url + "/api/v1/stats/totals", {"Authorization": f"Bearer {token}"}, 401) == 401
    page.reload()
    page.wait_for_selector("#login:not([hidden])")
    assert "not valid" in page.inner_text("#login-error")
    assert page.is_hidden("#dash")
    # The only errors: the browser's own log lines for the refused reads.
    assert errors and all("401" in e for e in errors), errors
    context.close()


def test_phone_width_has_no_horizontal_overflow(srv, offered, browser, tmp_path):
    context, page, errors = _open(browser, srv.url + "/dashboard?period=7d&tz=UTC", key=srv.key["read"],
                                  viewport={"width": 375, "height": 740})
    _wait_loaded(page)
    widths = page.evaluate("() => [document.documentElement.scrollWidth, document.body.scrollWidth, innerWidth]")
    assert max(widths[:2]) <= widths[2] == 375, widths
    # Nothing sticks out of the viewport either (overflow-x: hidden on body would hide that).
    wide = page.evaluate("""() => [...document.querySelectorAll('body *')].filter(e => {
        const r = e.getBoundingClientRect(); return r.width && (r.right > innerWidth + 0.5 || r.left < -0.5); })
        .map(e => e.tagName + '.' + e.className + '#' + e.id)""")
    assert wide == [], wide
    page.screenshot(path=str(tmp_path / "dashboard-phone.png"), full_page=True)
    print(f"\nscreenshot: {tmp_path / 'dashboard-phone.png'}")
    context.close()
    assert errors == []


def test_today_refreshes_itself_and_other_periods_do_not(srv, offered, browser):
    """The page's clock is Playwright's (installed before the page loads): a minute passes at once."""
    context = browser.new_context()
    context.add_init_script(f"localStorage.setItem('analytics_dashboard_key', {srv.key['read']!r})")
    page = context.new_page()
    page.clock.install()
    page.goto(srv.url + "/dashboard?period=today&tz=UTC")
    _wait_loaded(page)
    page.clock.fast_forward("01:05")
    _wait_loaded(page, 2)
    check_every_number(page, srv, offered, [])
    page.goto(srv.url + "/dashboard?period=7d&tz=UTC")
    _wait_loaded(page)
    page.clock.fast_forward("03:00")
    page.wait_for_timeout(500)
    assert _loads(page) == 1
    context.close()
