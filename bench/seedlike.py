"""The comparison write path for `python -m bench ingest` (d): one INSERT and one COMMIT per
request, the way seed 004 writes, and nothing else. It lives only here, never in the service.

A sync FastAPI route with a SQLModel session per request (run in the thread pool), as seed 004
does: validate the body, add the row, commit, refresh, return it. To compare write paths and only
them, it validates with the service's EventCreateSchema and enriches with the service's Enricher
(so the row is the same row) and writes into the same events hypertable. Started by the bench
with the service's own gunicorn command (boot/gunicorn.conf.py, 2 uvicorn workers):

    gunicorn -c boot/gunicorn.conf.py bench.seedlike:app   (PYTHONPATH=src:.)
"""
from __future__ import annotations

import os
from datetime import timedelta

from fastapi import Depends, FastAPI
from sqlmodel import Session, create_engine

from analytics.config import get_settings
from analytics.ingestion.enrich import UserAgentCache
from analytics.ingestion.pipeline import Enricher
from analytics.ingestion.schemas import EventCreateSchema
from analytics.models import Event, sqlalchemy_url

_settings = get_settings()
engine = create_engine(sqlalchemy_url(str(_settings.database_url)),
                       connect_args={"options": f"-c search_path={os.environ.get('DB_SCHEMA', 'public')},public"})
enricher = Enricher(UserAgentCache(_settings.ua_cache_size),
                    max_age=timedelta(days=_settings.max_event_age_days),
                    max_skew=timedelta(seconds=_settings.max_clock_skew_s))

app = FastAPI(title="seed-004-style write path (benchmark only)")


def get_session():
    with Session(engine) as session:
        yield session


@app.get("/readyz")
def readyz():
    return {"status": "ok"}


@app.post("/api/events/", status_code=201)
def create_event(payload: EventCreateSchema, session: Session = Depends(get_session)):
    obj = Event(**enricher.to_record(payload)._asdict())
    session.add(obj)
    session.commit()
    session.refresh(obj)
    return obj
