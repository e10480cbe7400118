"""GET /dashboard over HTTP (no browser): its security headers and caching, its assets, and the
share scope: a share link's token reads the stats routes and nothing else."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import httpx
import pytest

from support import ROOT, SRC


def keys_cli(srv, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": srv.env["DATABASE_URL"], "DB_SCHEMA": srv.env["DB_SCHEMA"],
           "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-m", "analytics", "keys", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def share_link(srv, name: str | None = None) -> tuple[str, str]:
    """A new share link made with the keys CLI: (name, token from the link's fragment)."""
    name = name or f"share-{uuid.uuid4().hex[:8]}"
    out = keys_cli(srv, "share", name, "--base-url", srv.url)
    assert out.returncode == 0, out.stderr
    link = out.stdout.strip().splitlines()[-1]
    m = re.fullmatch(re.escape(srv.url) + r"/dashboard#share=(ak_[a-z2-7]{32})", link)
    assert m, link
    return name, m.group(1)


def poll_status(url: str, headers: dict, want: int, timeout: float = 15) -> int:
    import time
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.get(url, headers=headers).status_code
        if status == want or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_page_has_strict_security_headers_and_no_inline_script(server):
    r = httpx.get(server.url + "/dashboard")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = {d.split()[0]: d.split()[1:] for d in r.headers["content-security-policy"].split("; ")}
    assert csp["script-src"] == ["'self'"] and csp["default-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["connect-src"] == ["'self'"]
    assert "unsafe" not in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "max-age=60" in r.headers["cache-control"]
    # Every script is a file from this origin: no inline script for the CSP to allow.
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", r.text, re.S)
    assert scripts and all('src="/dashboard/' in attrs and body.strip() == "" for attrs, body in scripts)


def test_page_and_assets_are_revalidated_by_etag(server):
    r = httpx.get(server.url + "/dashboard")
    etag = r.headers["etag"]
    again = httpx.get(server.url + "/dashboard", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assets = re.findall(r'(?:src|href)="(/dashboard/[^"]+)"', r.text)
    assert {a.split("?")[0] for a in assets} == {
        "/dashboard/app.js", "/dashboard/app.css",
        "/dashboard/vendor/uplot/uPlot.iife.min.js", "/dashboard/vendor/uplot/uPlot.min.css"}
    for url in assets:
        a = httpx.get(server.url + url, headers={"Accept-Encoding": "gzip"})
        assert a.status_code == 200, url
        assert a.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert a.headers["content-encoding"] == "gzip"
        # The URL's version is the asset's hash: a new release is a new URL.
        assert url.split("?v=")[1] == a.headers["etag"].strip('"')[:12]
        assert httpx.get(server.url + url, headers={"If-None-Match": a.headers["etag"]}).status_code == 304
        # Immutable only at this version's URL: unversioned or stale URLs are revalidated soon.
        for other in (url.split("?")[0], url.split("?")[0] + "?v=000000000000"):
            assert "immutable" not in httpx.get(server.url + other).headers["cache-control"], other
    assert httpx.get(server.url + "/dashboard/../../config.py").status_code == 404
    assert httpx.get(server.url + "/dashboard/nope.js").status_code == 404


def test_uplot_is_vendored_with_its_licence():
    vendor = SRC / "analytics" / "web" / "static" / "vendor" / "uplot"
    assert "MIT" in (vendor / "LICENSE").read_text()
    import json
    lock = json.loads((ROOT / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/uplot"]["version"]
    assert (vendor / "VERSION").read_text().strip() == f"uPlot {pinned}"
    assert f"(v{pinned})" in (vendor / "uPlot.iife.min.js").read_text()[:100]  # its banner


def test_share_token_reads_stats_only(server):
    name, token = share_link(server)
    share = {"Authorization": f"Bearer {token}"}
    assert poll_status(server.url + "/api/v1/stats/totals", share, 200) == 200
    assert httpx.get(server.url + "/api/v1/stats/breakdown?group_by=page", headers=share).status_code == 200
    assert httpx.get(server.url + "/api/v1/stats/timeseries", headers=share).status_code == 200
    # Not the export, not the seed's raw-event reads, not the operator's routes: 403 (a valid
    # credential without the scope), as documented for them.
    for path in ("/api/v1/events/export", "/api/events/", f"/api/events/{uuid.uuid4()}/", "/metrics"):
        r = httpx.get(server.url + path, headers=share)
        assert r.status_code == 403 and r.json()["error"] == "forbidden", (path, r.text)
    assert keys_cli(server, "revoke", name).returncode == 0
    assert poll_status(server.url + "/api/v1/stats/totals", share, 401) == 401


def test_share_scope_with_keys_create_and_in_list(server):
    name = f"share-{uuid.uuid4().hex[:8]}"
    out = keys_cli(server, "create", "--name", name, "--scope", "share")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1]
    assert poll_status(server.url + "/api/v1/stats/totals", {"Authorization": f"Bearer {token}"}, 200) == 200
    listed = keys_cli(server, "list").stdout
    assert re.search(rf"^{name}\s+share\s", listed, re.M), listed


def test_stats_routes_document_the_share_scope(server):
    doc = httpx.get(server.url + "/openapi.json").json()
    op = doc["paths"]["/api/v1/stats/totals"]["get"]
    assert "'share'" in op["responses"]["401"]["description"]
    assert "share" not in doc["paths"]["/api/v1/events/export"]["get"]["responses"]["401"]["description"]


def test_page_states_what_the_api_offers_as_openapi_does(server):
    """The page learns the metrics and dimensions from itself (no request in series before the
    reads): exactly the enums of the API's own description, and the filters it accepts."""
    import html
    import json
    page = httpx.get(server.url + "/dashboard").text
    offers = json.loads(html.unescape(re.search(r'<meta name="analytics-offers" content="([^"]+)">', page).group(1)))
    params = httpx.get(server.url + "/openapi.json").json()["paths"]["/api/v1/stats/breakdown"]["get"]["parameters"]
    by_name = {p["name"]: p["schema"] for p in params}
    assert offers["metrics"] == by_name["metrics"]["items"]["enum"]
    group_by = by_name["group_by"]["items"]  # the catalog's dimensions, or prop:<key> (anyOf)
    assert offers["dimensions"] == next(a["enum"] for a in group_by.get("anyOf", [group_by]) if "enum" in a)
    assert set(offers["filters"]) == set(offers["dimensions"]) & set(by_name)
    for name, allows_empty in offers["filters"].items():
        items = by_name[name]["items"]
        empty_ok = "" in items["enum"] if "enum" in items else items.get("minLength", 0) == 0
        assert allows_empty == empty_ok, name
