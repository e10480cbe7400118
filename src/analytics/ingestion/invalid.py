"""The refusal of one event by the service's own rules (after the schema), and the byte
measure those rules use. Its own module: ingestion/pipeline.py and ingestion/fields.py both
raise it."""
from __future__ import annotations


class InvalidEvent(ValueError):
    """A value that passed the schema but not the service's rules (e.g. time out of window)."""

    def __init__(self, field: str | tuple[str, ...], message: str, type_: str = "value_error") -> None:
        # a tuple names a place inside a field: ("props", key)
        super().__init__(message)
        self.field = field
        self.message = message
        self.type = type_

    @property
    def loc(self) -> tuple[str, ...]:
        return self.field if isinstance(self.field, tuple) else (self.field,)


def utf8_size(field: str, value: str) -> int:
    """Bytes of `value` in UTF-8, or InvalidEvent if it cannot be stored as text at all (a lone
    surrogate such as "\\ud800", which JSON allows and UTF-8 does not). ASCII is the common
    case and costs a flag test."""
    if value.isascii():
        return len(value)
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidEvent(field, "must be valid Unicode text: a lone surrogate (\\ud800-\\udfff) "
                                  "cannot be stored", "string_unicode") from None
