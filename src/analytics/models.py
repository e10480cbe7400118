"""The events table as a SQLModel/TimescaleModel class, for notebooks and ad-hoc SQL clients.

The service itself writes with COPY and reads with hand-written SQL (schema.py owns the DDL);
this class mirrors that DDL so `sqlmodel` queries work against a running database, e.g.

    from timescaledb import create_engine
    from timescaledb.hyperfunctions import time_bucket
    engine = create_engine(url_with_timescaledb_psycopg_scheme)
    select(time_bucket("1 day", Event.time), Event.os, func.count()).group_by(...)

tests/test_models.py checks that it matches the real table.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar, Optional

import sqlmodel
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field
from timescaledb import TimescaleModel


class Event(TimescaleModel, table=True):
    __tablename__ = "events"
    __chunk_time_interval__: ClassVar[str] = "INTERVAL 7 days"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    time: datetime = Field(sa_type=sqlmodel.DateTime(timezone=True), primary_key=True)
    page: str
    ip_address: Optional[str] = None
    user_agent: Optional[str] = None
    referrer: Optional[str] = None
    referrer_host: str = ""
    session_id: Optional[str] = None
    duration: Optional[int] = 0
    description: Optional[str] = None
    os: str = "Other"
    browser: str = "Other"
    device: str = "other"
    is_bot: bool = False
    # The day's pseudonym of the sender (issue 10: no IP is stored by default).
    visitor_id: Optional[int] = Field(default=None, sa_type=sqlmodel.BigInteger)
    # Issue 11 (revision 0007): what happened and where.
    name: str = "pageview"
    props: Optional[dict] = Field(default=None, sa_type=JSONB)
    hostname: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    country: str = ""


def sqlalchemy_url(database_url: str) -> str:
    """The same database, in the form SQLAlchemy's psycopg 3 dialect of `timescaledb` expects."""
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "timescaledb+psycopg://" + database_url[len(prefix):]
    return database_url
