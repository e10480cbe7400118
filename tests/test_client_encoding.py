"""The service speaks UTF-8 to the database whatever the environment says: a client encoding
set by PGCLIENTENCODING (or a role's or database's default) that cannot carry every character
must not turn a valid event into a refusal, nor a read of it into an error."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx

from support import Server, connect, drop_schema, new_schema_name

PAGE = "/页面/ü/🙂"


def test_a_latin1_environment_still_stores_and_reads_any_text(db_url):
    schema = new_schema_name("enc")
    srv = Server(db_url, schema, env={"PGCLIENTENCODING": "LATIN1"}).start()
    try:
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30) as c:
            one = c.post("/api/events/", json={"page": PAGE, "description": "中文"})
            assert one.status_code == 201, one.text
            batch = c.post("/api/events/batch", json=[{"page": PAGE, "name": "signup", "props": {"k": "€ 页"}}])
            assert batch.status_code in (200, 201), batch.text
            got = c.get(f"/api/events/{one.json()['id']}/")
            assert got.status_code == 200 and got.json()["page"] == PAGE, got.text
            now = datetime.now(timezone.utc).replace(microsecond=0)
            stats = c.get("/api/v1/stats/breakdown", params={
                "group_by": "page", "metrics": "events", "start": (now - timedelta(hours=1)).isoformat(),
                "end": (now + timedelta(hours=1)).isoformat()})
            assert stats.status_code == 200, stats.text
            assert {r["page"]: r["events"] for r in stats.json()["results"]} == {PAGE: 2}
        conn = connect(db_url, schema)
        try:
            rows = conn.execute("SELECT page, props FROM events ORDER BY name").fetchall()
        finally:
            conn.close()
        assert rows == [(PAGE, None), (PAGE, {"k": "€ 页"})]
    finally:
        srv.stop()
        drop_schema(db_url, schema)
