"""The event fields of issue 11 part 1, from the request body to the stored columns: the event's
`name` and `props`, and from its page URL the `hostname`, the path and the UTM parameters.

Rules (README "Send events"):
- `url` (optional, the page's full URL: what a tracker knows as `location.href`) gives the
  `hostname` (lower case, no port), the UTM parameters of its query string and, when the body
  has no `page`, the path (no query string, no fragment).
- `page` keeps meaning "the path". A `page` that arrives with a `?query` is split the same way:
  the query string is dropped from the stored page (as Plausible does) and its UTM parameters
  are used when there is no `url`. A `#fragment` in `page` is kept: a hash-routed single page
  app (the tracker's `data-hash`) sends its route there on purpose; a query string inside the
  fragment (`/#/signup?plan=pro`) belongs to the route and stays with it.
- `props`: a flat JSON object; `null` values are dropped (JSON.stringify keeps them, and "no
  value" is what they say), an object left empty is stored as no props (NULL).

Every refusal is an InvalidEvent naming the field (and, for props, the key).
"""
from __future__ import annotations

import json
import math
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from .invalid import InvalidEvent, utf8_size

PAGEVIEW = "pageview"
MAX_NAME = 120                 # characters (at most 480 bytes of UTF-8: fits every key budget)
MAX_URL = 4096                 # characters
MAX_HOSTNAME_BYTES = 253       # what DNS allows
MAX_UTM_BYTES = 512            # each of utm_source, utm_medium, utm_campaign
MAX_PROPS = 30
MAX_PROP_KEY_BYTES = 300
MAX_PROP_VALUE_BYTES = 2000
MAX_PROP_INT = 2 ** 53         # integers a JavaScript number holds exactly
UTM_PARAMS = ("utm_source", "utm_medium", "utm_campaign")


class Location(NamedTuple):
    page: str
    hostname: str
    utm_source: str
    utm_medium: str
    utm_campaign: str


def _split_page(page: str) -> tuple[str, str]:
    """(page without its query string, the query string). A `?` after a `#` is the fragment's."""
    q = page.find("?")
    if q < 0:
        return page, ""
    h = page.find("#")
    if 0 <= h < q:
        return page, ""
    if h < 0:
        return page[:q], page[q + 1:]
    return page[:q] + page[h:], page[q + 1:h]


def _utm(query: str, field: str) -> tuple[str, str, str]:
    if "utm_" not in query:
        return "", "", ""
    found = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k in UTM_PARAMS and k not in found:
            found[k] = v
    out = []
    for k in UTM_PARAMS:
        v = found.get(k, "").strip()
        if "\x00" in v:
            raise InvalidEvent(field, f"its {k} must not contain NUL (\\u0000) characters", "page_url")
        size = utf8_size(field, v)
        if size > MAX_UTM_BYTES:
            raise InvalidEvent(field, f"its {k} must be at most {MAX_UTM_BYTES} bytes in UTF-8 (this one "
                                      f"is {size}): the database indexes it", "too_many_bytes")
        out.append(v)
    return out[0], out[1], out[2]


def locate(page: str | None, url: str | None) -> Location:
    """The stored page, hostname and UTM parameters of an event (see the module docstring)."""
    hostname = query = ""
    path = None
    if url:
        try:
            parts = urlsplit(url.strip())
            hostname = (parts.hostname or "").rstrip(".")
        except ValueError:
            raise InvalidEvent("url", "must be a URL (https://host/path?query)", "page_url") from None
        size = utf8_size("url", hostname)
        if size > MAX_HOSTNAME_BYTES:
            raise InvalidEvent("url", f"its host name must be at most {MAX_HOSTNAME_BYTES} bytes",
                               "page_url")
        path, query = parts.path or "/", parts.query
    if page:
        page, page_query = _split_page(page)
        if not url:
            query = page_query
        if not page:
            page = "/"
    elif path is not None:
        page = path
    else:
        raise InvalidEvent("page", "Field required: send `page` (the path) or `url`", "page_url")
    return Location(page, hostname, *_utm(query, "url" if url else "page"))


def check_name(name: str | None) -> str:
    if name is None:
        return PAGEVIEW
    if "\x00" in name:
        raise InvalidEvent("name", "Value error, must not contain NUL (\\u0000) characters", "value_error")
    utf8_size("name", name)
    return name


def _prop_error(key: str, msg: str, type_: str) -> InvalidEvent:
    return InvalidEvent(("props", key), msg, type_)


def check_props(props: dict[str, Any] | None) -> str | None:
    """The props as the JSON text stored in the jsonb column (None when there are none)."""
    if not props:
        return None
    if len(props) > MAX_PROPS:
        raise InvalidEvent("props", f"at most {MAX_PROPS} keys (this one has {len(props)})", "prop_value")
    kept: dict[str, Any] = {}
    for key, value in props.items():
        if "\x00" in key:
            raise _prop_error(key, "the key must not contain NUL (\\u0000) characters", "prop_value")
        if not key:
            raise _prop_error(key, "the key must not be empty", "prop_value")
        if utf8_size("props", key) > MAX_PROP_KEY_BYTES:
            raise _prop_error(key, f"the key must be at most {MAX_PROP_KEY_BYTES} bytes in UTF-8",
                              "prop_value")
        if value is None:
            continue  # dropped: "no value"
        if isinstance(value, str):
            if "\x00" in value:
                raise _prop_error(key, "must not contain NUL (\\u0000) characters", "prop_value")
            size = utf8_size("props", value)
            if size > MAX_PROP_VALUE_BYTES:
                raise _prop_error(key, f"must be at most {MAX_PROP_VALUE_BYTES} bytes in UTF-8 (this one "
                                       f"is {size})", "prop_value")
        elif isinstance(value, bool):
            pass
        elif isinstance(value, int):
            if abs(value) > MAX_PROP_INT:
                raise _prop_error(key, f"integers must be within ±2^53 ({MAX_PROP_INT})", "prop_value")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _prop_error(key, "must be a finite number", "prop_value")
        else:
            raise _prop_error(key, "must be a string, a number or a boolean (no objects or arrays)",
                              "prop_value")
        kept[key] = value
    return json.dumps(kept, ensure_ascii=False, separators=(",", ":")) if kept else None
