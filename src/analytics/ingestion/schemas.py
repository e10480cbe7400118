"""Request and response shapes of the write path (seed 004's EventCreateSchema, extended)."""
from __future__ import annotations

import ipaddress
import re
import socket
import uuid
from datetime import datetime, timezone
from typing import Annotated, Any, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError
from sqlmodel import SQLModel

from ..timefmt import ISO_PATTERN, CalendarError, parse_instant
from .fields import (MAX_HOSTNAME_BYTES, MAX_NAME, MAX_PROP_KEY_BYTES, MAX_PROP_VALUE_BYTES, MAX_PROPS,
                     MAX_URL, MAX_UTM_BYTES, PAGEVIEW)

MAX_PAGE = 2048
MAX_USER_AGENT = 1024
MAX_REFERRER = 2048
MAX_DESCRIPTION = 4096
MAX_SESSION_ID = 256
MAX_DURATION_S = 86_400

# What the database enforces in bytes, checked in bytes (the character caps above stay: they are
# the API's). A btree index row holds at most INDEX_ROW_MAX_BYTES, and a value that does not
# compress (random CJK, emoji) is stored as is, so a 2,047-character CJK page (6 KB of UTF-8)
# passed the character cap and then failed the whole group commit. Indexed text:
# - events (page, time), the rollups' (page, bucket) indexes and the `ses` page keys: `page`;
# - the rollup primary keys, the widest being the `all` family: bucket, is_bot, page, os,
#   browser, device, referrer_host. os and device are short fixed words; browser is at most
#   BROWSER_MAX_CHARS characters (ingestion/enrich.py), so at most 4x that in bytes;
# - rollup_sessions.session_id: MAX_SESSION_ID characters, at most 1,024 bytes (fits alone);
# - the `src` family's key (issue 11): bucket, is_bot, name, hostname, country, utm_source,
#   utm_medium, utm_campaign: name <= MAX_NAME characters (480 bytes), hostname <=
#   MAX_HOSTNAME_BYTES, country 2, each UTM value <= MAX_UTM_BYTES: 2,271 bytes at most, below
#   what the `all` key holds (tests/test_hostile_writes.py stores them all at their limits).
# Measured on PostgreSQL 16 (tests/test_hostile_writes.py holds the proof at the limits): the
# `all` key takes page + referrer_host up to 2,400 bytes with a 256-byte browser, the events
# index a page up to 2,659 bytes. The caps leave a margin below both.
INDEX_ROW_MAX_BYTES = 2704
BROWSER_MAX_CHARS = 64
MAX_PAGE_BYTES = 2048  # = MAX_PAGE: any ASCII page the character cap accepts still fits
MAX_KEY_BYTES = 2304  # page + referrer host together, the rollup keys' user-supplied text


# Text fields PostgreSQL stores as text, which cannot hold NUL. They are checked by the body
# parser (ingestion/bodies.py), and only when the raw body has an escaped NUL at all: six
# Python validator calls per event were a third of the validation time.
TEXT_FIELDS = ("page", "ip_address", "user_agent", "referrer", "session_id", "description", "name", "url")
NUL_MESSAGE = "Value error, must not contain NUL (\\u0000) characters"


# Stated in the schema; enforced by the body parser (above), not by a pattern per field.
_NO_NUL = {"pattern": "^[^\\u0000]*$"}
# Seed 004 typed `duration` as an int that pydantic also took as a numeric string ("15"): the
# string form stays accepted, and documented, for its clients.
DURATION_TEXT = r"^0*(?:[0-9]{1,4}|[0-7][0-9]{4}|8[0-5][0-9]{3}|86[0-3][0-9]{2}|86400)$"
_DURATION_TEXT = re.compile(DURATION_TEXT)


def _duration(v: object) -> object:
    """What the schema states: an integer or a numeric string; not a boolean (pydantic would
    read true as 1), not a float with a fraction, not any other string."""
    if type(v) is int or v is None:
        return v
    if isinstance(v, bool) or isinstance(v, str) and not _DURATION_TEXT.fullmatch(v):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return v


def _instant(v: object) -> object:
    """ISO 8601 text only (pydantic would also read a number as a Unix time)."""
    if v is None:
        return v
    if not isinstance(v, str):
        raise PydanticCustomError("datetime_type", "Input should be an ISO 8601 date and time string")
    try:
        return parse_instant(v)
    except CalendarError as exc:
        raise PydanticCustomError(exc.rule, "Input should be an ISO 8601 date and time, {problem}",
                                  {"problem": str(exc)}) from None


Duration = Annotated[Optional[int], BeforeValidator(_duration), WithJsonSchema({"anyOf": [
    {"type": "integer", "minimum": 0, "maximum": MAX_DURATION_S},
    {"type": "string", "pattern": DURATION_TEXT}, {"type": "null"}]})]
Instant = Annotated[Optional[datetime], BeforeValidator(_instant), WithJsonSchema({"anyOf": [
    {"type": "string", "pattern": ISO_PATTERN}, {"type": "null"}]})]
IpText = Annotated[Optional[str], WithJsonSchema({"anyOf": [
    {"type": "string", "maxLength": 0}, {"type": "string", "format": "ipv4"},
    {"type": "string", "format": "ipv6"}, {"type": "null"}]})]


def fields_with_nul(item: object) -> list[str]:
    """The text fields of a raw (parsed JSON) event that contain a NUL character."""
    if not isinstance(item, dict):
        return []
    return [f for f in TEXT_FIELDS if isinstance(item.get(f), str) and "\x00" in item[f]]


class EventCreateSchema(BaseModel):
    """What a tracker sends. Only `page` is required; unknown fields are ignored (as in seed 004).

    A plain pydantic model (seed 004 declares it on SQLModel, which adds nothing to a model
    without a table): SQLModel's model_validate builds the object attribute by attribute in
    Python, and was three quarters of the batch endpoint's validation time."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    page: Optional[str] = Field(default=None, min_length=1, max_length=MAX_PAGE, json_schema_extra=_NO_NUL, description=(
        f"The path. At most {MAX_PAGE} characters and {MAX_PAGE_BYTES} bytes of UTF-8 (the database "
        "indexes it). Required unless `url` is sent. A `?query` is split off (its UTM parameters "
        "count when there is no `url`); a `#fragment` is kept (hash-routed apps)"))
    url: Optional[str] = Field(default=None, max_length=MAX_URL, json_schema_extra=_NO_NUL, description=(
        "The page's full URL (location.href): gives `hostname` (lower case, no port), "
        "utm_source/utm_medium/utm_campaign from its query string (each at most "
        f"{MAX_UTM_BYTES} bytes, host at most {MAX_HOSTNAME_BYTES}) and, without `page`, the path "
        "(no query string, no fragment)"))
    name: Optional[str] = Field(default=PAGEVIEW, min_length=1, max_length=MAX_NAME, json_schema_extra=_NO_NUL,
                                description="The event's name; `pageview` (the default) or a custom event's")
    props: Optional[dict[str, Any]] = Field(default=None, max_length=MAX_PROPS, description=(
        f"Custom properties: a flat JSON object of at most {MAX_PROPS} keys (each at most "
        f"{MAX_PROP_KEY_BYTES} bytes), values strings of at most {MAX_PROP_VALUE_BYTES} bytes, "
        "finite numbers (integers within ±2^53) or booleans; `null` values are dropped. Anything "
        "else is a 422 naming the key"), json_schema_extra={"additionalProperties": {"anyOf": [
            {"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]}})
    ip_address: IpText = Field(default="", max_length=64, description="IPv4 or IPv6 address")
    user_agent: Optional[str] = Field(default="", max_length=MAX_USER_AGENT, json_schema_extra=_NO_NUL)
    referrer: Optional[str] = Field(default="", max_length=MAX_REFERRER, json_schema_extra=_NO_NUL, description=(
        f"Its host name and `page` together: at most {MAX_KEY_BYTES} bytes of UTF-8 (indexed together)"))
    session_id: Optional[str] = Field(default=None, max_length=MAX_SESSION_ID, json_schema_extra=_NO_NUL)
    duration: Duration = Field(default=0, ge=0, le=MAX_DURATION_S, description="Seconds spent on the page")
    description: Optional[str] = Field(default="", max_length=MAX_DESCRIPTION, json_schema_extra=_NO_NUL)
    # Idempotency: a client may supply its own id and time; (id, time) identifies an event.
    id: Optional[uuid.UUID] = None
    time: Instant = Field(default=None, description=(
        "When the event happened, ISO 8601 (without an offset: UTC), within MAX_EVENT_AGE_DAYS of now; "
        "defaults to the time it is received"))

    @field_validator("ip_address")
    @classmethod
    def _valid_ip(cls, v: Optional[str]) -> Optional[str]:
        if v:
            v = v.strip()
            try:
                # Fast path for the common case: a dotted quad that libc accepts (4 decimal
                # octets, no leading zeros) is already in canonical form. ipaddress costs ~4 µs.
                socket.inet_pton(socket.AF_INET, v)
                return v
            except OSError:
                pass
            try:
                return str(ipaddress.ip_address(v))
            except ValueError:
                raise ValueError("not a valid IPv4 or IPv6 address") from None
        return v

    @field_validator("time")
    @classmethod
    def _aware(cls, v: Optional[datetime]) -> Optional[datetime]:
        if v is not None and v.tzinfo is None:
            v = v.replace(tzinfo=timezone.utc)  # naive timestamps are taken as UTC
        return v


class EventModel(SQLModel):
    """A stored event as the API returns it."""

    id: uuid.UUID
    time: datetime
    page: str
    ip_address: Optional[str] = ""
    user_agent: Optional[str] = ""
    referrer: Optional[str] = ""
    session_id: Optional[str] = None
    duration: Optional[int] = 0
    description: Optional[str] = ""
    os: str
    browser: str
    device: str
    is_bot: bool
    name: str = PAGEVIEW
    props: Optional[dict[str, Any]] = None
    hostname: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    country: str = Field(default="", description="ISO 3166-1 alpha-2 of the client address ('' unknown)")
    duplicate: bool = Field(default=False, description="True when this (id, time) was already stored")


class BatchResult(SQLModel):
    """The answer to POST /api/events/batch once the whole batch is committed."""

    stored: int = Field(description="Events stored by this request")
    duplicates: int = Field(description="Events whose (id, time) was already stored, or repeated in the batch")
    ids: list[uuid.UUID] = Field(description="The id of every event, in request order")
    duplicate_indexes: list[int] = Field(default_factory=list,
                                         description="Positions (0-based) of the duplicates")
