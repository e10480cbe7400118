"""Issue 10, part 1: API keys, JWTs, the access policy, CORS by route, /readyz details, on the
real server (gunicorn + uvicorn workers) and the real database.

- every read route: 401 without a key (with how to make one), with a wrong one and with a
  revoked one; 200 with `read` (Bearer or X-API-Key); 403 with an `ingest` key; on both paths;
- `keys revoke` reaches every worker within 10 s under the default KEYS_REFRESH_SECONDS;
- JWTs: an RSA key pair made here and a JWKS served here; wrong issuer, audience, expired,
  unknown kid, bad signature, alg=none and HS256-with-the-public-key are refused;
- PUBLIC_READS, INGEST_KEY_REQUIRED, INGEST_ALLOWED_HOSTS; /readyz anonymous vs admin.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from support import ROOT, SRC, Server, connect, drop_schema, new_schema_name

pytestmark = pytest.mark.both_paths

STATS = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}
HOW_TO = "make key NAME=dashboard SCOPE=read"


def read_routes(event_id: str) -> list[tuple[str, dict]]:
    return [("/api/v1/stats/timeseries", STATS), ("/api/v1/stats/breakdown", {**STATS, "group_by": "page"}),
            ("/api/v1/stats/totals", STATS), ("/api/events/", {"duration": "1 day"}),
            (f"/api/events/{event_id}/", {}), ("/api/v1/events/export", STATS)]


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def assert_401(r: httpx.Response) -> None:
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.headers["www-authenticate"] == "Bearer"
    body = r.json()
    assert body["error"] == "unauthorized" and HOW_TO in body["detail"], body


def keys_cli(srv: Server, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": srv.env["DATABASE_URL"], "DB_SCHEMA": srv.env["DB_SCHEMA"],
           "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-m", "analytics", "keys", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def poll(fn, ok, timeout: float, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {value!r}")
        time.sleep(every)


@pytest.fixture(scope="module")
def event_id(client) -> str:
    r = client.post("/api/events/", json={"page": "/keys"})
    assert r.status_code == 201
    return r.json()["id"]


# -- keys on every read route, both paths -------------------------------------------------------

def test_reads_without_a_key_are_401_saying_how_to_make_one(server, event_id, api_mode):
    for path, params in read_routes(event_id):
        assert_401(httpx.get(server.url + path, params=params))


def test_reads_with_a_wrong_or_malformed_key_are_401(server, event_id, api_mode):
    wrong = "ak_" + "a" * 32  # the shape of a key, not one
    for path, params in read_routes(event_id):
        for headers in (bearer(wrong), {"X-API-Key": wrong}, bearer("not-a-key"), {"Authorization": "Basic eDp5"},
                        bearer(server.key["read"] + "x")):
            assert_401(httpx.get(server.url + path, params=params, headers=headers))


def test_two_credentials_are_401_whichever_is_valid(server, event_id, api_mode):
    """A wrong credential next to a valid one was ignored (X-API-Key beside a valid bearer; the
    first of two Authorization headers). Different credentials in one request are now a 401."""
    good, wrong = server.key["read"], "ak_" + "a" * 32
    for path, params in read_routes(event_id):
        for headers in ([("Authorization", f"Bearer {good}"), ("X-API-Key", wrong)],
                        [("Authorization", f"Bearer {wrong}"), ("Authorization", f"Bearer {good}")]):
            r = httpx.get(server.url + path, params=params, headers=headers)
            assert r.status_code == 401 and "one credential" in r.json()["detail"], (path, headers, r.text)
        # The same key in both schemes (as a client that fills in every scheme sends it) is one.
        r = httpx.get(server.url + path, params=params, headers=[("Authorization", f"Bearer {good}"),
                                                                  ("X-API-Key", good)])
        assert r.status_code == 200, (path, r.text)


def test_reads_with_a_read_key_are_200_by_bearer_or_header(server, event_id, api_mode):
    for path, params in read_routes(event_id):
        for headers in (bearer(server.key["read"]), {"X-API-Key": server.key["read"]},
                        bearer(server.key["admin"])):
            r = httpx.get(server.url + path, params=params, headers=headers)
            assert r.status_code == 200, (path, r.text)


def test_reads_with_an_ingest_key_are_403(server, event_id, api_mode):
    for path, params in read_routes(event_id):
        r = httpx.get(server.url + path, params=params, headers=bearer(server.key["ingest"]))
        assert r.status_code == 403 and r.json()["error"] == "forbidden", r.text
        assert "'read'" in r.json()["detail"]


def test_the_schema_documents_the_security_of_every_guarded_route(client, api_mode):
    spec = client.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert spec["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"
    reads = [("/api/v1/stats/timeseries", "get"), ("/api/v1/stats/breakdown", "get"),
             ("/api/v1/stats/totals", "get"), ("/api/events/", "get"), ("/api/events/{event_id}/", "get"),
             ("/api/v1/events/export", "get")]
    for path, method in reads:
        op = spec["paths"][path][method]
        assert op["security"] == [{"bearer": []}, {"apiKey": []}], path
        assert {"401", "403"} <= set(op["responses"]), path
    for path in ("/api/events/", "/api/events/batch"):
        assert {} in spec["paths"][path]["post"]["security"]  # a key is optional for ingest


def test_ingest_stays_open_and_a_key_is_checked_if_sent(client, server, api_mode):
    anon = httpx.post(server.url + "/api/events/", json={"page": "/open"})
    assert anon.status_code == 201
    assert httpx.post(server.url + "/api/events/batch", json=[{"page": "/open"}]).status_code == 201
    assert_401(httpx.post(server.url + "/api/events/", json={"page": "/typo"}, headers=bearer("ak_" + "b" * 32)))
    r = httpx.post(server.url + "/api/events/", json={"page": "/k"}, headers=bearer(server.key["ingest"]))
    assert r.status_code == 201


def test_readyz_details_need_admin(server, api_mode):
    anon = httpx.get(server.url + "/readyz")
    assert anon.status_code == 200 and anon.json() == {"status": "ok"}
    for headers in (bearer(server.key["read"]), bearer(server.key["ingest"]), bearer("ak_" + "c" * 32),
                    bearer("junk")):
        r = httpx.get(server.url + "/readyz", headers=headers)
        assert r.status_code == 200 and r.json() == {"status": "ok"}, r.text
    admin = httpx.get(server.url + "/readyz", headers=bearer(server.key["admin"])).json()
    assert admin["status"] == "ok" and {"database", "edition", "writer", "process"} <= set(admin)


# -- the CLI and revocation -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_workers(db_url, api_mode):
    """Two workers with the default KEYS_REFRESH_SECONDS (5): revocation must reach both in 10 s."""
    schema = new_schema_name(f"keys_{api_mode}")
    srv = Server(db_url, schema, workers=2, env={"KEYS_REFRESH_SECONDS": "5",
                                                 "FAST_PATHS": str(api_mode == "fast").lower()})
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        drop_schema(db_url, schema)


def _statuses(srv: Server, key: str, n: int = 12) -> set[int]:
    """Statuses of n reads, each on a new connection (either worker may take it)."""
    return {httpx.get(srv.url + "/api/v1/stats/totals", params=STATS, headers=bearer(key)).status_code
            for _ in range(n)}


def test_keys_cli_create_list_revoke_within_10_s_on_every_worker(two_workers, db_url, api_mode):
    srv = two_workers
    made = keys_cli(srv, "create", "--name", "dashboard", "--scope", "read")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]  # the key is the last line
    assert key.startswith("ak_") and len(key) >= 3 + 26  # >= 128 bits of base32
    assert keys_cli(srv, "create", "--name", "dashboard", "--scope", "read").returncode != 0  # names are unique
    bad = keys_cli(srv, "create", "--name", "x", "--scope", "superuser")
    assert bad.returncode != 0 and "invalid choice" in bad.stderr
    # Stored as a hash only; a new key works on every worker after the next refresh.
    with connect(db_url, srv.env["DB_SCHEMA"]) as conn:
        row = conn.execute("SELECT prefix, key_hash, scope FROM api_keys WHERE name = 'dashboard'").fetchone()
        assert row[0] == key[:11] and bytes(row[1]) != key.encode() and row[2] == "read"
        dump = conn.execute("SELECT string_agg(t::text, ' ') FROM api_keys t").fetchone()[0]
        assert key not in dump and key[11:] not in dump
    poll(lambda: _statuses(srv, key), lambda s: s == {200}, timeout=10)
    # last_used_at is written by the refresh task, in bulk.
    listed = poll(lambda: keys_cli(srv, "list").stdout, lambda out: any(
        line.startswith("dashboard ") and line.split()[4] != "-" for line in out.splitlines()), timeout=10)
    assert key not in listed and key[:11] in listed

    revoked = keys_cli(srv, "revoke", "dashboard")
    assert revoked.returncode == 0, revoked.stderr
    t0 = time.monotonic()
    poll(lambda: _statuses(srv, key), lambda s: s == {401}, timeout=10)
    elapsed = time.monotonic() - t0
    # Both workers refuse it (12 new connections per poll land on both), and it stays refused,
    # on every read route.
    assert _statuses(srv, key, 20) == {401}, elapsed
    ev = httpx.post(srv.url + "/api/events/", json={"page": "/revoked"})
    for path, params in read_routes(ev.json()["id"]):
        for _ in range(4):
            assert_401(httpx.get(srv.url + path, params=params, headers=bearer(key)))
    assert keys_cli(srv, "revoke", "dashboard").returncode == 1  # nothing active by that name


# -- operator settings ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def open_reads(db_url, api_mode):
    """PUBLIC_READS (seed 004's open reads) and INGEST_ALLOWED_HOSTS."""
    schema = new_schema_name(f"openreads_{api_mode}")
    srv = Server(db_url, schema, env={"PUBLIC_READS": "true", "FAST_PATHS": str(api_mode == "fast").lower(),
                                      "INGEST_ALLOWED_HOSTS": "shop.example, *.blog.example"})
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        drop_schema(db_url, schema)


def test_public_reads_restores_open_reads(open_reads, api_mode):
    srv = open_reads
    ev = httpx.post(srv.url + "/api/events/", json={"page": "/x"}, headers=bearer(srv.key["ingest"]))
    for path, params in read_routes(ev.json()["id"]):
        assert httpx.get(srv.url + path, params=params).status_code == 200, path
        # A credential that is sent is still checked: a typo is not silently anonymous.
        assert_401(httpx.get(srv.url + path, params=params, headers=bearer("ak_" + "d" * 32)))


def test_ingest_allowed_hosts(open_reads, api_mode):
    srv = open_reads

    def post(path="/api/events/", body=None, **headers):
        return httpx.post(srv.url + path, json=body or {"page": "/h"}, headers=headers)

    assert post(Origin="https://shop.example").status_code == 201
    assert post(Referer="https://news.blog.example/post/1?x=y").status_code == 201
    assert post(Origin="https://blog.example").status_code == 201
    assert post("/api/events/batch", [{"page": "/h"}], Origin="https://shop.example").status_code == 201
    for headers in ({"Origin": "https://evil.example"}, {"Referer": "https://shop.example.evil.example/"},
                    {"Origin": "null"}, {}):
        r = post(**headers)
        assert r.status_code == 403 and "INGEST_ALLOWED_HOSTS" in r.json()["detail"], (headers, r.text)
        assert post("/api/events/batch", [{"page": "/h"}], **headers).status_code == 403
    # A server-side sender with an ingest key is not a page: no host to check.
    assert post(Authorization=f"Bearer {srv.key['ingest']}").status_code == 201


@pytest.fixture(scope="module")
def ingest_keyed(db_url, api_mode):
    schema = new_schema_name(f"ingestkey_{api_mode}")
    srv = Server(db_url, schema, env={"INGEST_KEY_REQUIRED": "true", "FAST_PATHS": str(api_mode == "fast").lower()})
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        drop_schema(db_url, schema)


def test_ingest_key_required(ingest_keyed, api_mode):
    srv = ingest_keyed
    for path, body in (("/api/events/", {"page": "/k"}), ("/api/events/batch", [{"page": "/k"}])):
        assert_401(httpx.post(srv.url + path, json=body))
        r = httpx.post(srv.url + path, json=body, headers=bearer(srv.key["read"]))
        assert r.status_code == 403 and "'ingest'" in r.json()["detail"]
        assert httpx.post(srv.url + path, json=body, headers=bearer(srv.key["ingest"])).status_code == 201
        assert httpx.post(srv.url + path, json=body, headers={"X-API-Key": srv.key["admin"]}).status_code == 201
    with connect(srv.env["DATABASE_URL"], srv.env["DB_SCHEMA"]) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 4  # nothing from the refused


# -- JWT -------------------------------------------------------------------------------------------

ISSUER, AUDIENCE = "https://idp.example/pool", "analytics-api"


class _Jwks:
    """A JWKS served over HTTP by a thread, counting fetches."""

    def __init__(self, keys: list[dict]) -> None:
        self.keys = keys
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


def _rsa():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def idp():
    signing, other = _rsa(), _rsa()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing.public_key()))
    jwks = _Jwks([{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}])
    yield {"key": signing, "other": other, "jwks": jwks}
    jwks.close()


@pytest.fixture(scope="module")
def jwt_server(db_url, api_mode, idp):
    schema = new_schema_name(f"jwt_{api_mode}")
    srv = Server(db_url, schema, env={"JWT_JWKS_URL": idp["jwks"].url, "JWT_ISSUER": ISSUER,
                                      "JWT_AUDIENCE": AUDIENCE, "FAST_PATHS": str(api_mode == "fast").lower()})
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        drop_schema(db_url, schema)


def token(key, *, kid="k1", alg="RS256", iss=ISSUER, aud=AUDIENCE, scope="read", exp_in=300, **extra) -> str:
    now = datetime.now(timezone.utc)
    claims = {"sub": "user-1", "iss": iss, "aud": aud, "iat": now, "exp": now + timedelta(seconds=exp_in),
              "scope": scope, **extra}
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def test_jwt_from_the_issuer_reads(jwt_server, idp, api_mode):
    url = jwt_server.url + "/api/v1/stats/totals"
    assert httpx.get(url, params=STATS, headers=bearer(token(idp["key"]))).status_code == 200
    # Scopes as a resource server names them (Cognito), or as a list.
    assert httpx.get(url, params=STATS, headers=bearer(token(idp["key"], scope="openid analytics/read"))
                     ).status_code == 200
    assert httpx.get(url, params=STATS, headers=bearer(token(idp["key"], scope=["read"]))).status_code == 200
    r = httpx.get(url, params=STATS, headers=bearer(token(idp["key"], scope="ingest")))
    assert r.status_code == 403
    # API keys keep working next to tokens.
    assert httpx.get(url, params=STATS, headers=jwt_server.headers).status_code == 200


def test_jwt_refusals(jwt_server, idp, api_mode):
    url = jwt_server.url + "/api/v1/stats/totals"
    pem = idp["key"].public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "kid": "k1", "typ": "JWT"}).encode())
    payload = jwt.utils.base64url_encode(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "scope": "read",
                                                     "exp": int(time.time()) + 300}).encode())
    cases = {
        "wrong issuer": token(idp["key"], iss="https://evil.example"),
        "wrong audience": token(idp["key"], aud="someone-else"),
        "expired": token(idp["key"], exp_in=-120),
        "unknown kid": token(idp["key"], kid="k-unknown"),
        "bad signature": token(idp["other"], kid="k1"),
        "alg none": (header + b"." + payload + b".").decode(),
        "hs256 with the public key": _hs256_with(pem),
        "no exp": jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "scope": "read"}, idp["key"], algorithm="RS256",
                             headers={"kid": "k1"}),
    }
    for why, tok in cases.items():
        r = httpx.get(url, params=STATS, headers=bearer(tok))
        assert r.status_code == 401, (why, r.status_code, r.text)
        assert r.json()["error"] == "unauthorized", why


def _hs256_with(secret: bytes) -> str:
    """The key-confusion attack: HMAC signed with the public key as the secret."""
    import base64
    import hashlib
    import hmac
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")  # noqa: E731
    head = enc(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode())
    body = enc(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "scope": "read", "exp": int(time.time()) + 300}).encode())
    sig = enc(hmac.new(secret, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


def test_a_flood_of_unknown_kids_does_not_fetch_the_jwks_each_time(jwt_server, idp, api_mode):
    url = jwt_server.url + "/api/v1/stats/totals"
    before = idp["jwks"].fetches
    with httpx.Client() as c:
        for i in range(50):
            r = c.get(url, params=STATS, headers=bearer(token(idp["key"], kid=f"made-up-{i}")))
            assert r.status_code == 401
    # At most one fetch per worker per REFETCH_MIN_S (10 s); 50 made-up kids are not 50 fetches.
    assert idp["jwks"].fetches - before <= 2


# -- the cost of a wrong key ------------------------------------------------------------------------

def test_a_flood_of_wrong_keys_never_reaches_the_database(db_url):
    """The first key made with the CLI before the service ever started (it migrates the schema
    itself), a server that re-reads keys only hourly: 300 wrong keys and 300 right ones later,
    the api_keys table has not been read once more (no lookup per request, known or not)."""
    schema = new_schema_name("keyflood")
    srv = Server(db_url, schema, keys=False, env={"KEYS_REFRESH_SECONDS": "3600"})
    try:
        made = keys_cli(srv, "create", "--name", "first", "--scope", "read")
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip().splitlines()[-1]
        srv.start()

        def reads() -> int:
            with connect(db_url, schema) as conn:
                conn.execute("SELECT pg_stat_clear_snapshot()")
                return conn.execute("SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables "
                                    "WHERE schemaname = %s AND relname = 'api_keys'", (schema,)).fetchone()[0]

        url = srv.url + "/api/v1/stats/totals"
        with httpx.Client() as c:
            assert c.get(url, params=STATS, headers=bearer(key)).status_code == 200  # loaded at startup
            time.sleep(1.5)  # statistics reach pg_stat_* up to a second late
            before = reads()
            for i in range(300):
                wrong = "ak_" + uuid.uuid4().hex[:26].replace("0", "a").replace("1", "b").replace("8", "c") \
                    .replace("9", "d").ljust(32, "e")
                assert c.get(url, params=STATS, headers=bearer(wrong)).status_code == 401
                assert c.get(url, params=STATS, headers=bearer(key)).status_code == 200
        time.sleep(1.5)
        assert reads() == before
    finally:
        srv.stop()
        drop_schema(db_url, schema)
