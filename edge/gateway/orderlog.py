"""The durable order log: every accepted event, appended and fsynced before it is acknowledged.

One canonical-JSON object per line (:func:`edge.batch.canonical_bytes`):
``{"seq": n, **edge.market.event_to_dict(event)}``, ``seq`` counting from 1 without gaps. Drop
``seq`` and each line is an edge.market log line, so ``ngrid market replay`` (and the
coordinator) replays it. A crash can leave at most one partial last line (never acknowledged): it
is cut off when the log is opened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edge.batch import canonical_bytes
from edge.errors import GatewayError

__all__ = ["OrderLog", "OrderLogError"]


class OrderLogError(GatewayError):
    """The order log on disk is corrupt (not a cut-off last line) or cannot be written."""


class OrderLog:
    """Append-only, fsynced JSON-lines file; keeps the records in memory for batches."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        self.truncated_bytes = 0
        self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            # A partial last line: the write was cut by a crash before its fsync returned.
            self.truncated_bytes = len(data) - end
            with open(self.path, "r+b") as f:
                f.truncate(end)
                os.fsync(f.fileno())
        for n, line in enumerate(data[:end].splitlines(), start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise OrderLogError(f"{self.path}:{n}: not JSON ({err})") from err
            if not isinstance(record, dict) or record.get("seq") != n:
                raise OrderLogError(f"{self.path}:{n}: expected seq {n}")
            self.records.append(record)

    @property
    def last_seq(self) -> int:
        return len(self.records)

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Write ``records`` (numbered ``last_seq + 1``, ``+ 2`` ...) and fsync.

        When this returns the records are on disk; only then may the caller acknowledge them.
        Raises :class:`OrderLogError` if a record's ``seq`` breaks the sequence or the write fails.
        """
        batch = [dict(r) for r in records]
        for i, record in enumerate(batch):
            if record.get("seq") != self.last_seq + i + 1:
                raise OrderLogError(
                    f"record {record!r} does not continue the log at {self.last_seq}"
                )
        if not batch:
            return
        blob = b"".join(canonical_bytes(r) + b"\n" for r in batch)
        try:
            os.write(self._fd, blob)
            os.fsync(self._fd)
        except OSError as err:
            raise OrderLogError(f"cannot append to {self.path}: {err.strerror}") from err
        self.records.extend(batch)

    def slice(self, first: int, last: int) -> list[dict[str, Any]]:
        """Records ``first``..``last`` (inclusive sequence numbers)."""
        return self.records[first - 1 : last]

    def close(self) -> None:
        os.close(self._fd)
