"""The proof worker: edge.zk commitments and range proofs in a separate process.

A Bulletproofs range proof costs tens of milliseconds of CPU; made on the event loop it would
stall MQTT and the API. The worker is one child process (``forkserver`` start method, so it does
not inherit the API's listening socket) connected by a :func:`multiprocessing.Pipe`. The event
loop writes requests to the pipe and reads answers through ``loop.add_reader``: no helper
threads in the gateway process competing for the GIL (as ``ProcessPoolExecutor``'s manager
thread would). Requests are answered in order.

At most :data:`MAX_IN_FLIGHT` requests are in the pipe at a time; the rest wait in the gateway
and go out as answers come back. The pipe's descriptors are blocking, so a burst of trades that
filled the request direction while the worker's answers filled the other would block the event
loop in ``send`` and the worker in its own ``send``, each waiting for the other, for ever. With
a few small messages in flight (a request ~300 bytes, an answer ~750) neither direction can
fill.

Shutdown: :meth:`ProofWorker.close` tells the worker to stop (``None`` down the pipe) and closes
its end; requests still in flight are dropped. A worker that finds the pipe closed (the gateway
stopped or died: ``EOFError`` on receive, ``BrokenPipeError`` or ``ConnectionResetError`` on
send) exits quietly with status 0. Any other failure of the worker ends it with its traceback on
stderr and is logged by the gateway (``proof worker exited``). The worker ignores SIGINT: a
Ctrl-C on the terminal reaches the whole process group, and the gateway, not the signal, says
when the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["MAX_IN_FLIGHT", "ProofPool", "ProofWorker", "make_proof"]

Done = Callable[[tuple[bytes, bytes] | None, str | None], None]
Request = tuple[int, int, int, bytes]

#: Requests written to the worker's pipe and not yet answered, at most.
MAX_IN_FLIGHT = 4

#: What a closed pipe looks like from either end (the peer stopped or died).
PIPE_CLOSED = (EOFError, BrokenPipeError, ConnectionResetError)

log = logging.getLogger("ngrid.gateway.prover")


def make_proof(
    soc_bp: int, threshold_bp: int, reserved_bp: int, context: bytes
) -> tuple[bytes, bytes]:
    """Commit to ``soc_bp`` and prove SoC - reserved >= threshold (edge.zk.prove_at_least)."""
    from edge.zk import commit, prove_at_least

    commitment, opening = commit(soc_bp)
    proof = prove_at_least(opening, threshold=threshold_bp, reserved=reserved_bp, context=context)
    return commitment, proof


def _serve(conn: Connection) -> None:
    """The worker: (soc, threshold, reserved, context) in; ("ok", c, p) or ("err", msg) out;
    ``None`` in: stop. Returns quietly once the gateway has closed the pipe."""
    import os
    import signal

    from edge.zk import precompute

    # Fixed-base tables for the 16-bit SoC range (docs/zk.md "Performance": ~33 MiB, a few
    # seconds once, then each proof costs about a quarter less).
    precompute(16)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Proving is background work: on a Pi's few cores the event loop (MQTT, API, locks) goes
    # first.
    os.nice(10)

    try:
        while True:
            request = conn.recv()
            if request is None:  # the gateway is stopping
                return
            try:
                commitment, proof = make_proof(*request)
                answer: tuple[Any, ...] = ("ok", commitment, proof)
            except Exception as err:  # reported to the gateway, which voids the trade
                answer = ("err", repr(err))
            conn.send(answer)
    except PIPE_CLOSED:
        return  # the gateway closed its end (stopped, or died): nobody to answer
    finally:
        conn.close()


class ProofWorker:
    """One proving process; :meth:`submit` calls ``done(result, error)`` on the loop."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("forkserver")
        self._conn, child = ctx.Pipe(duplex=True)
        self._process = ctx.Process(target=_serve, args=(child,), name="ngrid-prover", daemon=True)
        self._process.start()
        child.close()
        self._waiting: deque[Done] = deque()  # in the pipe, in order
        self._queued: deque[tuple[Request, Done]] = deque()  # not yet written
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False  # close() called, or the worker died: no more requests out
        self._died = False  # the worker exited under a running gateway (logged then)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self._conn.fileno(), self._answer)

    @property
    def backlog(self) -> int:
        """Requests submitted and not yet answered (in the pipe or waiting to go in)."""
        return len(self._waiting) + len(self._queued)

    def submit(
        self, soc_bp: int, threshold_bp: int, reserved_bp: int, context: bytes, done: Done
    ) -> None:
        """Queue a proof; ``done`` is called on the loop with ``((commitment, proof), None)``
        or ``(None, error)``. Never blocks: see the module's docstring."""
        if self._died:  # fails on the loop, as an answer would (never inside the caller)
            assert self._loop is not None
            self._loop.call_soon(done, None, "the proof worker exited")
            return
        self._queued.append(((soc_bp, threshold_bp, reserved_bp, context), done))
        self._pump()

    def _pump(self) -> None:
        while self._queued and len(self._waiting) < MAX_IN_FLIGHT and not self._closing:
            request, done = self._queued.popleft()
            self._waiting.append(done)
            try:
                self._conn.send(request)
            except OSError:  # the worker is gone; its exit is logged where it is read
                self._worker_exited()
                return

    def _answer(self) -> None:
        try:
            answer: Any = self._conn.recv()
        except (EOFError, OSError):
            self._worker_exited()
            return
        done = self._waiting.popleft()
        self._pump()
        if answer[0] == "ok":
            done((answer[1], answer[2]), None)
        else:
            done(None, answer[1])

    def _worker_exited(self) -> None:
        """The worker died under a running gateway: log it, fail every proof asked for (the
        gateway voids those trades) and every later one."""
        if self._closing:
            return
        self._closing = self._died = True
        self._process.join(timeout=1)
        self._log_exit()
        self._fail_all("the proof worker exited")

    def _log_exit(self) -> None:
        log.error(
            "proof worker exited",
            extra={"fields": {"pid": self.pid, "exitcode": self._process.exitcode}},
        )

    def _fail_all(self, error: str) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._conn.fileno())
        while self._waiting:
            self._waiting.popleft()(None, error)
        while self._queued:
            self._queued.popleft()[1](None, error)

    async def warm_up(self) -> None:
        """Make one proof, so the first trade does not pay for starting the worker."""
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        self.submit(5000, 2000, 0, b"ngrid/gateway/warm-up", lambda r, e: future.set_result(None))
        await future

    def close(self) -> None:
        """Tell the worker to stop and wait for it (2 s, then it is killed). Proofs in flight
        are dropped: their answers would come after the gateway stopped."""
        self._closing = True
        if self._conn.closed:
            return
        if self._loop is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._conn.fileno())
        if not self._died:
            with contextlib.suppress(OSError):  # the worker may be gone already
                self._conn.send(None)
        self._conn.close()
        self._process.join(timeout=2)
        if self._process.is_alive():
            log.warning("proof worker did not stop; killed", extra={"fields": {"pid": self.pid}})
            self._process.kill()
            self._process.join()
        elif self._process.exitcode != 0 and not self._died:
            self._log_exit()


class ProofPool:
    """``workers`` proving processes (:class:`ProofWorker`) behind one :meth:`submit`: each
    request goes to the worker with the fewest unanswered requests (the first such one). Each
    answer comes back on the loop as it is ready, so with more than one worker proofs may finish
    out of order (the core settles each trade when its proof and its ack are both in). One
    worker is the default: on a Pi the event loop needs a core of its own."""

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("a proof pool needs at least one worker")
        self.workers = [ProofWorker() for _ in range(workers)]

    @property
    def pid(self) -> int | None:
        """The first worker's process id."""
        return self.workers[0].pid

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        for worker in self.workers:
            worker.attach(loop)

    @property
    def backlog(self) -> int:
        """Requests submitted and not yet answered, over all workers."""
        return sum(w.backlog for w in self.workers)

    def submit(
        self, soc_bp: int, threshold_bp: int, reserved_bp: int, context: bytes, done: Done
    ) -> None:
        """As :meth:`ProofWorker.submit`, on the least busy worker."""
        worker = min(self.workers, key=lambda w: w.backlog)
        worker.submit(soc_bp, threshold_bp, reserved_bp, context, done)

    async def warm_up(self) -> None:
        """Make one proof on each worker (their tables are built meanwhile, in parallel)."""
        await asyncio.gather(*(w.warm_up() for w in self.workers))

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
