"""The SQLModel class for notebooks must describe the table the service actually creates."""
import pytest
import sqlalchemy as sa
from sqlmodel import Session, func, select
from timescaledb import create_engine
from timescaledb.hyperfunctions import time_bucket

from analytics.models import Event, sqlalchemy_url

pytestmark = pytest.mark.both_paths


def test_model_matches_table(db):
    rows = db.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'events'").fetchall()
    table_cols = {name for name, _ in rows}
    model_cols = set(Event.__table__.columns.keys())
    assert table_cols == model_cols


def test_sqlmodel_time_bucket_query(client, db_url, schema):
    page = "/models-test"
    for _ in range(3):
        assert client.post("/api/events/", json={"page": page, "duration": 4}).status_code == 201
    # timescaledb.create_engine sets the session timezone through libpq `options`, so the
    # test's schema goes on the URL's search path via an event instead.
    engine = create_engine(sqlalchemy_url(db_url))
    def set_path(dbapi_conn, _):
        dbapi_conn.execute(f"SET search_path = {schema}, public")
        dbapi_conn.commit()

    sa.event.listen(engine, "connect", set_path)
    try:
        bucket = time_bucket("1 day", Event.time)
        q = (select(bucket.label("bucket"), Event.page, func.count(), func.avg(Event.duration))
             .where(Event.page == page).group_by(bucket, Event.page))
        with Session(engine) as s:
            rows = s.exec(q).all()
    finally:
        engine.dispose()
    assert len(rows) == 1
    assert rows[0][2] == 3 and float(rows[0][3]) == 4.0
