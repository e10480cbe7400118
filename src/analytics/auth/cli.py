"""`python -m analytics keys COMMAND` (or `make key NAME=dashboard SCOPE=read`): API keys of
DB_SCHEMA in DATABASE_URL.

  create --name NAME --scope read|ingest|admin|share
                                                 a new key; printed once, as the last line
  share NAME [--base-url URL]                    a dashboard share link (a `share` key: the stats
                                                 reads only), printed once, as the last line
  list                                           name, scope, prefix, created, last used, revoked
  revoke NAME                                    the key stops working within KEYS_REFRESH_SECONDS
                                                 (5 s) on every worker

The schema is migrated first when it has no api_keys table yet, so the first key can be created
before the service has ever started (Railway: a one-off command; Compose: `docker compose run`).
"""
from __future__ import annotations

import argparse
import re
import sys

import psycopg

from ..config import Settings, get_settings
from ..db import quote_ident
from .keys import NAME_PATTERN, display_prefix, key_hash, new_key
from .principal import SCOPES, SHARE


def _connect(settings: Settings) -> psycopg.Connection:
    conn = psycopg.connect(settings.database_url, autocommit=True, connect_timeout=10)
    conn.execute("SELECT set_config('search_path', %s, false)", (f"{quote_ident(settings.db_schema)}, public",))
    return conn


def _ensure_table(settings: Settings) -> None:
    with _connect(settings) as conn:
        (exists,) = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                 (f"{quote_ident(settings.db_schema)}.api_keys",)).fetchone()
    if not exists:
        from .. import migrations
        print(f"migrating schema {settings.db_schema!r} to head first (it has no api_keys table)", file=sys.stderr)
        migrations.upgrade(settings)


def create(settings: Settings, name: str, scope: str) -> str:
    _ensure_table(settings)
    key = new_key()
    with _connect(settings) as conn:
        try:
            conn.execute("INSERT INTO api_keys (name, prefix, key_hash, scope) VALUES (%s, %s, %s, %s)",
                         (name, display_prefix(key), key_hash(key), scope))
        except psycopg.errors.UniqueViolation:
            raise SystemExit(f"a key named {name!r} exists already (revoked keys keep their name); "
                             "choose another name") from None
    return key


def list_keys(settings: Settings) -> list[tuple]:
    _ensure_table(settings)
    with _connect(settings) as conn:
        return conn.execute("SELECT name, scope, prefix, created_at, last_used_at, revoked_at "
                            "FROM api_keys ORDER BY created_at, name").fetchall()


def revoke(settings: Settings, name: str) -> bool:
    _ensure_table(settings)
    with _connect(settings) as conn:
        cur = conn.execute("UPDATE api_keys SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL",
                           (name,))
        return cur.rowcount == 1


def share_link(base_url: str, key: str) -> str:
    """The dashboard URL carrying a share token in its fragment (never sent in requests or Referer)."""
    return f"{base_url.rstrip('/')}/dashboard#share={key}"


def _name(value: str) -> str:
    if not re.match(NAME_PATTERN, value):
        raise argparse.ArgumentTypeError("1 to 64 characters: letters, digits, '.', '_' or '-'")
    return value


def _when(t) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t is not None else "-"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m analytics keys", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="a new key, printed once (the last line of the output)")
    c.add_argument("--name", required=True, type=_name)
    c.add_argument("--scope", required=True, choices=SCOPES)
    s = sub.add_parser("share", help="a dashboard share link: a new 'share' key, in the link's fragment")
    s.add_argument("name", type=_name)
    s.add_argument("--base-url", default="", help="where the service is reached, e.g. "
                   "https://stats.example.com (default: the path only)")
    sub.add_parser("list", help="every key (never the key itself: its prefix)")
    r = sub.add_parser("revoke", help="revoke a key by name")
    r.add_argument("name", type=_name)
    args = ap.parse_args(argv)
    settings = get_settings()

    if args.cmd == "create":
        key = create(settings, args.name, args.scope)
        print(f"created key {args.name!r} with scope {args.scope!r} in schema {settings.db_schema!r}.")
        print("It is shown once: store it now. Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.")
        print(key)
        return 0
    if args.cmd == "share":
        key = create(settings, args.name, SHARE)
        print(f"created share link {args.name!r} in schema {settings.db_schema!r}: it reads the stats "
              f"routes only; revoke it with `python -m analytics keys revoke {args.name}`.")
        print("It is shown once. The token is in the URL fragment, which browsers send to no server.")
        print(share_link(args.base_url, key))
        return 0
    if args.cmd == "list":
        rows = list_keys(settings)
        print(f"{'NAME':<24} {'SCOPE':<7} {'PREFIX':<12} {'CREATED':<20} {'LAST USED':<20} REVOKED")
        for name, scope, prefix, created, used, revoked in rows:
            print(f"{name:<24} {scope:<7} {prefix + '…':<12} {_when(created):<20} {_when(used):<20} {_when(revoked)}")
        return 0
    if revoke(settings, args.name):
        # The refresh runs every KEYS_REFRESH_SECONDS on each worker, and takes a moment itself.
        print(f"revoked {args.name!r}: refused by every worker within {2 * settings.keys_refresh_s:g} s")
        return 0
    print(f"no active key named {args.name!r}", file=sys.stderr)
    return 1
