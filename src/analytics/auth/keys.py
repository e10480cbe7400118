"""API keys: how one is made, what is stored of it, and the table's DDL.

A key is `ak_` + 32 characters of base32 (160 random bits). It is shown once, at creation; the
database keeps its SHA-256 (a key has far too much randomness to guess or enumerate, so a slow
password hash would buy nothing and cost every request) and its first characters, so that an
operator can tell keys apart in `keys list`.
"""
from __future__ import annotations

import base64
import hashlib
import re
import secrets

from psycopg import sql

PREFIX = "ak_"
_RANDOM_BYTES = 20  # 160 bits
_SHAPE = re.compile(r"^ak_[a-z2-7]{32}$")
NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
DISPLAY_CHARS = 8  # of the random part, after the prefix


def new_key() -> str:
    return PREFIX + base64.b32encode(secrets.token_bytes(_RANDOM_BYTES)).decode().lower().rstrip("=")


def looks_like_key(text: str) -> bool:
    """The shape of our keys: anything else is not looked at further (a JWT, say, or junk)."""
    return bool(_SHAPE.match(text))


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def display_prefix(key: str) -> str:
    return key[:len(PREFIX) + DISPLAY_CHARS]


def api_keys_ddl(schema: str) -> list[sql.Composable]:
    """What this version expects (revision 0003 made it, 0010 added the share scope; tests/test_migrations.py compares)."""
    return [sql.SQL("""CREATE TABLE IF NOT EXISTS {}.api_keys (
        name         text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._-]{{1,64}}$'),
        prefix       text        NOT NULL,
        key_hash     bytea       NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
        scope        text        NOT NULL CHECK (scope IN ('read', 'ingest', 'admin', 'share')),
        created_at   timestamptz NOT NULL DEFAULT now(),
        last_used_at timestamptz,
        revoked_at   timestamptz
    )""").format(sql.Identifier(schema))]
