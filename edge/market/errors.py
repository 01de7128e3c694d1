"""The market core's exceptions: one subtree of :class:`edge.errors.NgridError`.

An event the engine refuses raises :class:`InvalidEvent` and changes nothing (the h11 habit: an
illegal event leaves the state machine as it was). A log line that cannot be read, or names an
event the engine refuses, raises :class:`LogError`, which also says the line number.
"""

from __future__ import annotations

from edge.errors import NgridError

__all__ = ["InvalidEvent", "LogError", "MarketError", "TierError"]


class MarketError(NgridError):
    """A failure of the market core."""


class InvalidEvent(MarketError, ValueError):
    """An event is malformed or not allowed in the engine's current state.

    ``field`` names the offending field of the event (``None`` when the whole event is at fault),
    ``reason`` says what is wrong with it.
    """

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"field {field!r}: {reason}" if field else reason)


class LogError(InvalidEvent):
    """A line of an order log is malformed or names an event the engine refuses.

    ``line`` is the 1-based line number, ``source`` the log's name when it is known (the CLI sets
    it), so that ``str(err)`` reads ``market.jsonl:7: field 'wh': must be a positive integer``.
    """

    def __init__(
        self, reason: str, *, line: int, field: str | None = None, source: str | None = None
    ) -> None:
        self.line = line
        self.source = source
        super().__init__(reason, field=field)
        where = f"{source}:{line}" if source else f"line {line}"
        what = f"field {field!r}: {reason}" if field else reason
        self.args = (f"{where}: {what}",)

    def with_source(self, source: str) -> LogError:
        """The same error, naming the log it came from."""
        return LogError(self.reason, line=self.line, field=self.field, source=source)


class TierError(MarketError, ValueError):
    """A tiered duration offering breaks its constraints (see :mod:`edge.market.tiers`)."""
