"""One input row -> one event row, or a reject naming the field and the reason.

The API's own rules apply (EventCreateSchema: lengths, types, the byte caps of indexed text),
with two differences that history import needs: `time` is required and may be any age (not
only MAX_EVENT_AGE_DAYS back; still not in the future), and the classification columns of our
own export (os, browser, device, is_bot) are kept as exported rather than derived again.

Umami's `website_event` export (one row per page view or custom event) maps as README says:
url_path -> page, referrer_domain + referrer_path -> referrer (no query: privacy), created_at -> time,
event_id -> id, session_id -> session_id, browser/os/device as Umami recorded them (it exports
no user agent) in this service's vocabulary, a custom event's event_name -> name, hostname ->
hostname, utm_source/utm_medium/utm_campaign (or, in older exports, url_query) -> the UTM
columns. Umami's event properties (its event_data table) are not in this export. Umami keeps no
duration per event: duration is NULL, which the duration metrics leave out.
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Callable
from urllib.parse import parse_qsl

from pydantic import ValidationError

from ..ingestion.enrich import DEVICES, OS_NAMES, UserAgentCache, referrer_host
from ..ingestion.fields import MAX_HOSTNAME_BYTES, MAX_UTM_BYTES, UTM_PARAMS, check_name, check_props
from ..ingestion.pipeline import EventRecord, InvalidEvent, _check_text
from ..ingestion.schemas import BROWSER_MAX_CHARS, TEXT_FIELDS, EventCreateSchema
from ..privacy.visitor import strip_referrer

# Ids for rows that have none, the same on every run over the same file: a re-run or a resumed
# import finds them already stored.
_ID_NAMESPACE = uuid.UUID("6f1c1d3e-3c1a-5e7f-9b7a-2a4d0e9c8b11")
EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc)  # the stats API's range starts there
OURS = ("id", "time", "page", "ip_address", "user_agent", "referrer", "session_id", "duration",
        "description", "os", "browser", "device", "is_bot",
        "name", "props", "hostname", "utm_source", "utm_medium", "utm_campaign", "country")
# Where an event happened, kept as exported (an export has the path, not the URL they came from).
_WHERE = ("hostname", "utm_source", "utm_medium", "utm_campaign", "country")


class Reject(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _from_validation(exc: ValidationError, rename: dict[str, str] | None = None) -> Reject:
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err["loc"]) or "row"
    return Reject((rename or {}).get(field, field), err["msg"])


def _no_surrogates(values: dict) -> None:
    """Invalid UTF-8 in a CSV arrives as lone surrogates (formats.py): name the field."""
    for k, v in values.items():
        if isinstance(v, str) and not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise Reject(str(k), "not valid UTF-8") from None


def _bool(field: str, v: object) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "t", "1", "yes"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("false", "f", "0", "no"):
        return False
    raise Reject(field, "must be true or false")


class Mapper:
    """Rows of one format to EventRecords. `now` bounds `time` from above (clock skew allowed)."""

    def __init__(self, fmt: str, ua_cache: UserAgentCache, max_skew: timedelta,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 umami_session: str = "session_id", store_ip: bool = False) -> None:
        self.fmt = fmt
        self.store_ip = store_ip  # STORE_IP: as at ingestion, no address is stored unless asked
        self.umami_session = umami_session  # or "visit_id": Umami's visits (30 minutes) as sessions
        self.ua_cache = ua_cache
        self.max_skew = max_skew
        self.now = now
        self.to_record: Callable[[dict, int], EventRecord] = (
            self._umami if fmt == "umami" else self._ours)

    def _time(self, t: datetime | None, field: str) -> datetime:
        if t is None:
            raise Reject(field, "required: an import needs the time of each event")
        if t > self.now() + self.max_skew:
            raise Reject(field, "must not be in the future")
        if t < EARLIEST:
            raise Reject(field, "must not be before 1900-01-01")
        return t

    def _validate(self, body: dict, rename: dict[str, str] | None = None) -> EventCreateSchema:
        for f in TEXT_FIELDS:
            v = body.get(f)
            if isinstance(v, str) and "\x00" in v:
                raise Reject((rename or {}).get(f, f), "must not contain NUL (\\u0000) characters")
        try:
            return EventCreateSchema.model_validate(body)
        except ValidationError as exc:
            raise _from_validation(exc, rename) from None

    def _fields(self, ev: EventCreateSchema, body: dict) -> dict:
        """name, props and where the event happened (issue 11 part 1), with ingest's limits."""
        out: dict = {}
        for f in _WHERE:
            v = body.get(f)
            if v is None:
                continue
            if not isinstance(v, str) or "\x00" in v:
                raise Reject(f, "must be text without NUL characters")
            cap = 2 if f == "country" else MAX_HOSTNAME_BYTES if f == "hostname" else MAX_UTM_BYTES
            if len(v.encode("utf-8")) > cap:
                raise Reject(f, f"must be at most {cap} bytes")
            out[f] = v.upper() if f == "country" else v
        try:
            out["name"] = check_name(ev.name)
            out["props"] = check_props(ev.props)
        except InvalidEvent as exc:
            raise Reject(".".join(exc.loc), exc.message) from None
        return out

    def _ours(self, row: dict, line: int) -> EventRecord:
        _no_surrogates(row)
        csv_like = self.fmt == "csv"
        # In CSV an empty cell is a missing value (the export writes NULL as empty).
        body = {k: v for k, v in row.items() if k in OURS and not (csv_like and v == "")}
        if isinstance(body.get("props"), str):  # CSV: the object's JSON text
            try:
                body["props"] = json.loads(body["props"])
            except ValueError:
                raise Reject("props", "must be a JSON object") from None
        ev = self._validate(body)
        if not ev.page:
            raise Reject("page", "required")
        host = referrer_host(ev.referrer)
        try:
            _check_text(ev.page, host)
        except InvalidEvent as exc:
            raise Reject(exc.field, exc.message) from None
        t = self._time(ev.time, "time")
        given = [body.get(k) for k in ("os", "browser", "device")]
        if all(v not in (None, "") for v in given):
            os_, browser, device = (str(v) for v in given)
            if os_ not in OS_NAMES:
                raise Reject("os", f"must be one of {', '.join(OS_NAMES)}")
            if device not in DEVICES:
                raise Reject("device", f"must be one of {', '.join(DEVICES)}")
            if len(browser) > BROWSER_MAX_CHARS:
                raise Reject("browser", f"must be at most {BROWSER_MAX_CHARS} characters")
            is_bot = _bool("is_bot", body["is_bot"]) if body.get("is_bot") not in (None, "") else device == "bot"
        else:  # not exported with them: classified from the user agent, as at ingestion
            info = self.ua_cache.lookup(ev.user_agent or "")
            os_, browser, device, is_bot = info.os, info.browser[:BROWSER_MAX_CHARS], info.device, info.is_bot
        return EventRecord(
            id=ev.id or uuid.uuid5(_ID_NAMESPACE, f"{line}:{sorted(body.items())!r}"),
            time=t, page=ev.page, ip_address=(ev.ip_address or None) if self.store_ip else None,
            user_agent=ev.user_agent,
            # as at ingestion: no query string or fragment (tokens, e-mail addresses)
            referrer=strip_referrer(ev.referrer) if ev.referrer else "", referrer_host=host, session_id=ev.session_id,
            duration=ev.duration, description=ev.description,
            os=os_, browser=browser, device=device, is_bot=is_bot, **self._fields(ev, body))

    def _umami(self, row: dict, line: int) -> EventRecord:
        _no_surrogates(row)
        g = lambda k: (row.get(k) or "").strip()  # noqa: E731
        if not g("url_path"):
            raise Reject("url_path", "required")
        domain, rpath = g("referrer_domain"), g("referrer_path")
        referrer = ""
        if domain or rpath:
            # without referrer_query: referrers are stored without their query (privacy)
            referrer = (f"https://{domain}" if domain else "") + (rpath or ("/" if domain else ""))
        # event_type 2 is a custom event: event_name is its name (a page view's is 'pageview').
        name = g("event_name") if g("event_type") == "2" else None
        body = {"id": g("event_id") or None, "time": g("created_at") or None, "page": row.get("url_path", ""),
                "referrer": referrer, "session_id": g(self.umami_session) or None, "name": name or None}
        ev = self._validate(body, {"id": "event_id", "time": "created_at", "page": "url_path",
                                   "referrer": "referrer_path", "name": "event_name",
                                   "session_id": self.umami_session})
        if ev.id is None:
            raise Reject("event_id", "required")
        host = referrer_host(ev.referrer)
        try:
            _check_text(ev.page, host)
        except InvalidEvent as exc:
            raise Reject({"page": "url_path", "referrer": "referrer_domain"}.get(exc.field, exc.field),
                         exc.message) from None
        device = umami_device(g("device"))
        return EventRecord(
            id=ev.id, time=self._time(ev.time, "created_at"), page=ev.page, ip_address=None,
            user_agent="", referrer=ev.referrer, referrer_host=host, session_id=ev.session_id,
            duration=None, description=ev.description, os=umami_os(g("os")),
            browser=umami_browser(g("browser")), device=device, is_bot=device == "bot",
            **self._umami_where(row, g), **self._fields(ev, {}))

    def _umami_where(self, row: dict, g: Callable[[str], str]) -> dict:
        """hostname, and the UTM parameters (Umami's utm_* columns where it has them, else its
        url_query), and the country it recorded (ISO alpha-2)."""
        country = g("country").upper()
        out = {"hostname": g("hostname").lower(),
               "country": country if len(country) == 2 and country.isascii() and country.isalpha() else ""}
        query = dict(parse_qsl(g("url_query"), keep_blank_values=True)) if "utm_" in g("url_query") else {}
        for k in UTM_PARAMS:
            out[k] = g(k) or query.get(k, "").strip()
        for k, v in out.items():
            if len(v.encode("utf-8")) > (MAX_HOSTNAME_BYTES if k == "hostname" else MAX_UTM_BYTES):
                raise Reject(k if k in row else "url_query", "too long")
        return out


# Umami names browsers by detect-browser's ids; ours are ua-parser's family names (what the
# `browser` filter and group_by show). Unknown ids are kept as Umami gave them.
UMAMI_BROWSERS = {
    "chrome": "Chrome", "crios": "Chrome Mobile iOS", "chromium-webview": "Chrome Mobile WebView",
    "firefox": "Firefox", "fxios": "Firefox iOS", "safari": "Safari", "ios": "Mobile Safari",
    "ios-webview": "Mobile Safari UI/WKWebView", "edge-chromium": "Edge", "edge": "Edge",
    "edge-ios": "Edge Mobile", "opera": "Opera", "opera-mini": "Opera Mini",
    "samsung": "Samsung Internet", "android": "Android", "yandexbrowser": "Yandex Browser",
    "facebook": "Facebook", "instagram": "Instagram", "ie": "IE", "silk": "Amazon Silk",
    "miui": "MiuiBrowser", "kakaotalk": "KakaoTalk", "aol": "AOL", "bb10": "BlackBerry WebKit",
}


def umami_browser(name: str) -> str:
    if not name:
        return "Other"
    return UMAMI_BROWSERS.get(name.lower(), name)[:BROWSER_MAX_CHARS]


def umami_os(name: str) -> str:
    """Umami's OS names ('Windows 10', 'Mac OS', 'Android OS', 'Chrome OS', ...) -> ours."""
    n = name.lower()
    if n.startswith("windows"):
        return "Windows"
    if n.startswith("mac os") or n == "macos":
        return "MacOS"
    if n == "ios":
        return "iOS"
    if n.startswith("android"):
        return "Android"
    if n in ("chrome os", "chromeos"):
        return "ChromeOS"
    if n == "linux":
        return "Linux"
    return "Other"


def umami_device(name: str) -> str:
    n = name.lower()
    if n in ("desktop", "laptop"):
        return "desktop"
    if n in ("mobile", "tablet", "bot"):
        return n
    return "other"
