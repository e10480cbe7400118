import pytest

pytestmark = pytest.mark.both_paths


def test_health_and_round_trip(client, db):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/").json() == {"hello": "world"}
    r = client.post("/api/events/", json={"page": "/smoke"})
    assert r.status_code == 201, r.text
    ev = r.json()
    got = client.get(f"/api/events/{ev['id']}/")
    assert got.status_code == 200
    assert got.json()["page"] == "/smoke"
    (n,) = db.execute("SELECT count(*) FROM events WHERE id = %s", (ev["id"],)).fetchone()
    assert n == 1
