"""The tracker in a real headless Chromium (Debian's `chromium`, installed by boot/chromium.sh;
driven by Playwright through executable_path), against the real server and database.

A test page on another origin (a tiny HTTP server on its own port) carries the snippet; what
reaches the database is compared with what the page did, event by event.

Test-only override of the automated-browser check: the tracker sends nothing when
`navigator.webdriver` is true, which it is in any browser Playwright drives. These tests launch
Chromium with `--disable-blink-features=AutomationControlled`, a browser flag (not something a
page can set), so the tracker itself has no switch that a site could turn on by accident;
`test_nothing_is_sent_by_an_automated_browser` runs without the flag and checks the refusal.

A hidden tab is simulated by the page's own `visibilityState` (an init script): the page starts
hidden, so visible time only accrues between the test's `show` and `hide`, and the engagement
events are deterministic however slow the machine is."""
from __future__ import annotations

import http.server
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

from support import chromium_path, free_port

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                     "(requirements-dev.txt; `make test` installs it)")


CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=(
    "no Chromium: boot/chromium.sh could not install Debian's chromium package here (needs apt "
    "and root or sudo); set CHROMIUM_PATH to run the browser tests"))

NOT_AUTOMATED = ["--disable-blink-features=AutomationControlled"]
STUB = ("<script>window.trackEvent=window.trackEvent||function(){(window.trackEvent.q="
        "window.trackEvent.q||[]).push(arguments)}</script>")
VISIBILITY = """
let vis = 'hidden';
Object.defineProperty(Document.prototype, 'visibilityState', {get() { return vis; }, configurable: true});
Object.defineProperty(Document.prototype, 'hidden', {get() { return vis == 'hidden'; }, configurable: true});
window.__setVisible = v => { vis = v ? 'visible' : 'hidden'; document.dispatchEvent(new Event('visibilitychange')); };
"""


class Site:
    """Pages on another origin: the first path segment picks the page's HTML (a single-page app:
    every path under it is the same document)."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                html = pages.get(self.path.split("/")[1])
                body = (html or "not found").encode()
                self.send_response(200 if html else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def page(self, script_attrs: str, body: str = "", head: str = "") -> str:
        """A new page with the snippet; returns its path prefix (unique: events are found by it)."""
        key = "t" + uuid.uuid4().hex[:12]
        self.pages[key] = (f'<!doctype html><html><head><link rel="icon" href="data:,">{head}'
                           f'<script defer {script_attrs}></script></head>'
                           f"<body>{body}</body></html>")
        return "/" + key

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def site():
    s = Site()
    yield s
    s.httpd.shutdown()


@pytest.fixture(scope="module")
def pw():
    with playwright_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(pw):
    b = pw.chromium.launch(executable_path=CHROMIUM, args=NOT_AUTOMATED)
    yield b
    b.close()


def _watch(page) -> tuple[list[str], list]:
    """Console errors and page errors, and the requests to the ingest endpoint."""
    errors: list[str] = []
    sent: list = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: sent.append(r) if "/api/events/" in r.url else None)
    return errors, sent


def _events(db, prefix: str) -> list[tuple]:
    """(page, name, duration) of the events under `prefix`; pageviews' name as ''."""
    rows = db.execute("SELECT page, CASE WHEN name = 'pageview' THEN '' ELSE name END, duration FROM events "
                      "WHERE page LIKE %s", (prefix + "%",)).fetchall()
    return sorted(rows)


def _fields(db, prefix: str) -> dict[tuple, tuple]:
    """(page, name) -> (props, hostname, utm_source, utm_medium, utm_campaign)."""
    rows = db.execute("SELECT page, name, props, hostname, utm_source, utm_medium, utm_campaign FROM events "
                      "WHERE page LIKE %s", (prefix + "%",)).fetchall()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def _wait_for(db, prefix: str, count: int, timeout: float = 20) -> list[tuple]:
    """The events under `prefix` once there are `count` (then a moment more, for any extra)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(_events(db, prefix)) < count:
        time.sleep(0.1)
    time.sleep(1.0)
    return _events(db, prefix)


def _ready(page) -> None:
    page.wait_for_function("typeof window.trackEvent == 'function' && !window.trackEvent.q")


def test_pageviews_spa_navigations_custom_event_outbound_and_engagement(server, db, site, browser):
    snippet = f'src="{server.url}/js/tracker.js" data-local data-outbound data-downloads'
    p = site.page(snippet, head=STUB + "<script>trackEvent('Early', {queued: true})</script>", body=(
        '<a id="out" href="https://example.org/elsewhere" onclick="event.preventDefault()">out</a>'
        '<a id="same" href="/same-site" onclick="event.preventDefault()">in</a>'
        '<a id="dl" href="/files/report.pdf" onclick="event.preventDefault()">pdf</a>'))
    context = browser.new_context()
    context.add_init_script(VISIBILITY)
    page = context.new_page()
    errors, sent = _watch(page)
    page.goto(site.url(p + "/?utm_source=news&utm_medium=email&utm_campaign=launch#top"))  # a UTM landing
    _ready(page)
    page.evaluate(f"""() => {{
        history.pushState({{}}, '', '{p}/a');
        history.pushState({{}}, '', '{p}/b');
        history.replaceState({{}}, '', '{p}/b');   // the same path again: no pageview
    }}""")
    page.evaluate("() => new Promise(r => { addEventListener('popstate', r, {once: true}); history.back(); })")
    page.evaluate("() => trackEvent('Signup', {plan: 'pro', seats: 3})")
    page.click("#out")
    page.click("#same")  # same host: not an outbound click
    page.click("#dl")
    # The tab is shown for about 1.5 s, then hidden: one engagement event with that visible time.
    page.evaluate("() => __setVisible(true)")
    time.sleep(1.6)
    page.evaluate("() => __setVisible(false)")
    assert page.evaluate("() => document.cookie") == ""
    assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0
    rows = _wait_for(db, p, 9)
    context.close()

    engagement = [r for r in rows if r[1] == "engagement"]
    assert len(engagement) == 1 and engagement[0][0] == p + "/a" and 1 <= engagement[0][2] <= 10, rows
    others = sorted(r for r in rows if r[1] != "engagement")
    assert others == sorted([
        (p + "/", "", 0),  # the pageview on load
        (p + "/", "Early", 0),  # queued by the stub before the script loaded
        (p + "/a", "", 0), (p + "/b", "", 0),  # pushState twice (the replaceState repeat: nothing)
        (p + "/a", "", 0),  # popstate (back)
        (p + "/a", "Signup", 0),
        (p + "/a", "Outbound Link: Click", 0),
        (p + "/a", "File Download", 0),
    ]), rows
    # name, props, host name and UTM parameters (from the landing URL; the path without them)
    fields = _fields(db, p)
    assert fields[(p + "/", "pageview")] == (None, "127.0.0.1", "news", "email", "launch"), fields
    assert fields[(p + "/", "Early")][0] == {"queued": True}
    assert fields[(p + "/a", "Signup")] == ({"plan": "pro", "seats": 3}, "127.0.0.1", "", "", ""), fields
    assert fields[(p + "/a", "Outbound Link: Click")][0] == {"url": "https://example.org/elsewhere"}
    assert fields[(p + "/a", "File Download")][0] == {"url": site.url("/files/report.pdf")}
    assert errors == []
    for r in sent:  # no preflight: every request to the API is the POST itself, as text/plain
        assert r.method == "POST" and r.headers["content-type"].startswith("text/plain")


def test_hash_navigations_count_with_data_hash(server, db, site, browser):
    p = site.page(f'src="{server.url}/js/tracker.js" data-local data-hash')
    page = browser.new_page()
    errors, _ = _watch(page)
    page.goto(site.url(p + "/"))
    _ready(page)
    page.evaluate("() => new Promise(r => { addEventListener('hashchange', r, {once: true}); location.hash = 'x'; })")
    rows = _wait_for(db, p, 2)
    page.close()
    # (this page is visible from the start: on a slow machine the hash change can come half a
    # second after load, and then the first page's engagement is sent too; tested above)
    assert [r for r in rows if r[1] != "engagement"] == [(p + "/", "", 0), (p + "/#x", "", 0)]
    assert errors == []


def _sends_nothing(browser, site, snippet: str, before: str = "") -> list:
    p = site.page(snippet, head=before)
    page = browser.new_page()
    errors, sent = _watch(page)
    page.goto(site.url(p + "/"))
    _ready(page)
    page.evaluate(f"() => {{ trackEvent('Nope'); history.pushState({{}}, '', '{p}/next'); }}")
    page.evaluate("() => new Promise(r => setTimeout(r, 500))")
    page.close()
    assert errors == []
    return sent


def test_nothing_is_sent_on_localhost_without_data_local(server, site, browser):
    # The test pages are on 127.0.0.1: a developer's own machine.
    assert _sends_nothing(browser, site, f'src="{server.url}/js/tracker.js"') == []


def test_nothing_is_sent_when_ignored_or_under_dnt(server, site, browser):
    ignore = "<script>localStorage.analytics_ignore = '1'</script>"
    assert _sends_nothing(browser, site, f'src="{server.url}/js/tracker.js" data-local', ignore) == []
    dnt = "<script>Object.defineProperty(navigator, 'doNotTrack', {get: () => '1'})</script>"
    assert _sends_nothing(browser, site, f'src="{server.url}/js/tracker.js" data-local data-respect-dnt', dnt) == []


def test_nothing_is_sent_by_an_automated_browser(server, site, pw):
    automated = pw.chromium.launch(executable_path=CHROMIUM)  # navigator.webdriver is true
    try:
        assert _sends_nothing(automated, site, f'src="{server.url}/js/tracker.js" data-local') == []
    finally:
        automated.close()


def test_data_api_overrides_the_endpoint(server, db, site, browser):
    # The script from one URL, the events to the one data-api names (here the same server by
    # another name for it).
    api = server.url.replace("127.0.0.1", "localhost") + "/api/events/"
    p = site.page(f'src="{server.url}/js/tracker.js" data-local data-api="{api}"')
    page = browser.new_page()
    _, sent = _watch(page)
    page.goto(site.url(p + "/"))
    _ready(page)
    rows = _wait_for(db, p, 1)
    page.close()
    assert rows == [(p + "/", "", 0)]
    assert [r.url for r in sent] == [api]
