"""The durable order log: every accepted event, appended and fsynced before it is acknowledged.

One canonical-JSON object per line (:func:`edge.batch.canonical_bytes`):
``{"seq": n, **edge.market.event_to_dict(event)}``, ``seq`` counting from 1 without gaps. Drop
``seq`` and each line is an edge.market log line, so ``ngrid market replay`` (and the
coordinator) replays it. A crash can leave at most one partial last line (never acknowledged): it
is cut off when the log is opened.

Memory: the file keeps everything; memory keeps only the records after :attr:`OrderLog.base`,
the ones a restart must replay or the next batch must carry. The gateway moves ``base`` up with
:meth:`OrderLog.forget_through` once a batch has sealed them, so a gateway that runs for months
holds one batch's worth of records, not its whole history (docs/gateway.md, "Memory").
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from edge.batch import canonical_bytes
from edge.errors import GatewayError

__all__ = ["OrderLog", "OrderLogError"]


class OrderLogError(GatewayError):
    """The order log on disk is corrupt (not a cut-off last line) or cannot be written, or a
    caller asked for records no longer kept in memory."""


def _parse(line: bytes, n: int, path: Path) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise OrderLogError(f"{path}:{n}: not JSON ({err})") from err
    if not isinstance(record, dict) or record.get("seq") != n:
        raise OrderLogError(f"{path}:{n}: expected seq {n}")
    return record


class OrderLog:
    """Append-only, fsynced JSON-lines file; keeps the records after :attr:`base` in memory.

    ``OrderLog(path, keep_after=n)`` opens (or creates) the log, checks every line (a JSON object
    whose ``seq`` is its line number) and keeps records ``n + 1`` onwards in :attr:`records`
    (all of them with the default 0). Raises :class:`OrderLogError` on a corrupt line. One
    thread may append while another slices or forgets: a lock keeps ``base`` and ``records``
    consistent.
    """

    def __init__(self, path: Path, *, keep_after: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        self.base = 0  # records 1..base are on disk only
        self.truncated_bytes = 0
        self._lock = threading.Lock()
        self._load(max(0, keep_after))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _load(self, keep_after: int) -> None:
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
        n = 0
        for n, line in enumerate(data[:end].splitlines(), start=1):
            record = _parse(line, n, self.path)
            if n > keep_after:
                self.records.append(record)
        self.base = min(keep_after, n)

    @property
    def last_seq(self) -> int:
        """The seq of the last record on disk (0: the log is empty)."""
        with self._lock:
            return self.base + len(self.records)

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Write ``records`` (numbered ``last_seq + 1``, ``+ 2`` ...) and fsync.

        When this returns the records are on disk; only then may the caller acknowledge them.
        Raises :class:`OrderLogError` if a record's ``seq`` breaks the sequence or the write fails.
        """
        batch = [dict(r) for r in records]
        last = self.last_seq
        for i, record in enumerate(batch):
            if record.get("seq") != last + i + 1:
                raise OrderLogError(f"record {record!r} does not continue the log at {last}")
        if not batch:
            return
        blob = b"".join(canonical_bytes(r) + b"\n" for r in batch)
        try:
            os.write(self._fd, blob)
            os.fsync(self._fd)
        except OSError as err:
            raise OrderLogError(f"cannot append to {self.path}: {err.strerror}") from err
        with self._lock:
            self.records.extend(batch)

    def slice(self, first: int, last: int) -> list[dict[str, Any]]:
        """Records ``first``..``last`` (inclusive sequence numbers), from memory.

        Raises :class:`OrderLogError` if ``first`` is at or below :attr:`base` (forgotten: read
        them from disk with :meth:`read`)."""
        with self._lock:
            if first <= self.base:
                raise OrderLogError(
                    f"records {first}..{self.base} are no longer in memory "
                    f"(kept: after {self.base})"
                )
            return self.records[first - 1 - self.base : last - self.base]

    def forget_through(self, seq: int) -> None:
        """Drop records ``..seq`` from memory (they stay on disk); ``base`` becomes ``seq``.

        A ``seq`` at or below :attr:`base` changes nothing; one past :attr:`last_seq` is
        refused (:class:`OrderLogError`)."""
        with self._lock:
            if seq > self.base + len(self.records):
                raise OrderLogError(
                    f"cannot forget through {seq}: the log ends at {self.base + len(self.records)}"
                )
            if seq > self.base:
                del self.records[: seq - self.base]
                self.base = seq

    def read(self, first: int = 1) -> Iterator[dict[str, Any]]:
        """Every record from seq ``first`` on, read from disk (for tools and tests; the service
        uses the records in memory). Raises :class:`OrderLogError` on a corrupt line."""
        with open(self.path, "rb") as f:
            for n, line in enumerate(f, start=1):
                if n >= first and line.endswith(b"\n"):
                    yield _parse(line, n, self.path)

    def close(self) -> None:
        os.close(self._fd)
