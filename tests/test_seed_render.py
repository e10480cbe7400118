"""The seed endpoint's JSON is written by PostgreSQL; it must be byte for byte what FastAPI
renders for the seed's List[EventBucketSchema] from the same rows, for awkward values too:
floats of every shape, strings that need escaping, microseconds, non-UTC session zones."""
from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from typing import List

import psycopg
import pytest
from psycopg import sql
from pydantic import TypeAdapter

from analytics.aggregation.seed_api import EventBucketSchema
from analytics.aggregation.seed_reader import _RENDER

pytestmark = pytest.mark.both_paths

FLOATS = [0.0, 1.0, 12.0, 12.5, 1 / 3, 2 / 3, 0.1 + 0.2, 5e-05, 1.5e-07, 123456789.123, 2.0 ** 31,
          1e15, 9.999999999999998e15, 4503599627370497.0, 86399.99999999999, 1e-4, 0.0001234]
PAGES = ["/", "/a\"b", "/back\\slash", "/tab\there", "/nl\nx", "/ctl\x01\x1f", "/caf\u00e9", "/\u2028",
         "/emoji\U0001F600", "/del\x7f", "/x?y=1&z=<2>", ""]
SYSTEMS = ["Windows", "", None, "iOS"]
ZONES = ["UTC", "Europe/Berlin", "Asia/Kolkata", "America/St_Johns", "Asia/Kathmandu"]


def _rows(rng: random.Random) -> list[tuple]:
    base = datetime(2024, 3, 30, 22, 0, tzinfo=timezone.utc)
    rows = []
    for i in range(300):
        t = base + timedelta(minutes=37 * i)
        if i % 7 == 0:
            t += timedelta(microseconds=rng.randrange(1, 1_000_000))
        if i % 3 == 0:
            avg = rng.choice(FLOATS + [None])
        else:
            n = rng.randrange(1, 5000)
            avg = sum(rng.randrange(0, 4000) for _ in range(rng.randrange(1, 40))) / n
        rows.append((t, rng.choice(PAGES), rng.choice(SYSTEMS), avg, rng.randrange(0, 10 ** 12)))
    return rows


@pytest.mark.parametrize("zone", ZONES)
def test_postgres_rendering_equals_fastapi(db_url, zone):
    rows = _rows(random.Random(zone))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT set_config('TimeZone', %s, false)", (zone,))
        conn.execute("SET extra_float_digits = 1")  # what the service's pool sets
        conn.execute("""CREATE TEMP TABLE r (bucket timestamptz, page text, operating_system text,
                        avg_duration float8, count bigint)""")
        with conn.cursor().copy("COPY r FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
        inner = sql.SQL("SELECT * FROM r")
        text = "[" + ",".join(o for (o,) in conn.execute(sql.SQL(_RENDER).format(inner=inner))) + "]"
        # The rows as the seed would have them: fetched by psycopg in the session's zone, ordered.
        fetched = conn.execute("SELECT * FROM r ORDER BY bucket, page, operating_system").fetchall()
    adapter = TypeAdapter(List[EventBucketSchema])
    objs = [dict(zip(("bucket", "page", "operating_system", "avg_duration", "count"), f)) for f in fetched]
    want = json.dumps(adapter.dump_python(adapter.validate_python(objs), mode="json"), ensure_ascii=False,
                      allow_nan=False, separators=(",", ":"))
    assert text == want


def test_no_rows_is_an_empty_list(client):
    r = client.get("/api/events/", params={"pages": "/no-such-page-ever"})
    assert r.status_code == 200 and r.content == b"[]"
