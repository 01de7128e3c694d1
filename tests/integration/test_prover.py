"""The proof worker (edge.gateway.prover) under a burst of requests.

Requests beyond ``MAX_IN_FLIGHT`` wait in the gateway, so neither direction of the worker's
pipe can fill: before, a burst blocked the event loop in ``send`` while the worker blocked
sending answers nobody read, for ever (found with 20 meters in bench/gateway.py).
"""

from __future__ import annotations

import asyncio

import pytest

from edge.gateway.prover import ProofWorker


@pytest.mark.timeout(120)
async def test_a_burst_of_requests_is_answered_in_order_without_blocking() -> None:
    loop = asyncio.get_running_loop()
    worker = ProofWorker()
    worker.attach(loop)
    try:
        n = 3000
        answers: list[tuple[int, str | None]] = []
        all_in: asyncio.Future[None] = loop.create_future()

        def done_for(i: int) -> object:
            def done(result: tuple[bytes, bytes] | None, error: str | None) -> None:
                answers.append((i, error))
                if len(answers) == n:
                    all_in.set_result(None)

            return done

        # SoC 0 cannot cover a threshold of 50 %: the worker refuses each at once, so small
        # answers pour back while 20 kB requests keep coming (~60 MB in all, far beyond what a
        # pipe holds in either direction).
        context = b"x" * 20_000
        for i in range(n):
            worker.submit(0, 5000, 0, context, done_for(i))  # type: ignore[arg-type]
        assert worker.backlog == n  # all accepted without waiting for a single answer
        await asyncio.wait_for(all_in, timeout=90)
        assert [i for i, _ in answers] == list(range(n))  # in order
        assert all(error is not None for _, error in answers)
        assert worker.backlog == 0

        # The worker still proves after the burst.
        proved: asyncio.Future[tuple[bytes, bytes] | None] = loop.create_future()
        worker.submit(6000, 2000, 0, b"ctx", lambda r, e: proved.set_result(r))
        result = await asyncio.wait_for(proved, timeout=60)
        assert result is not None and len(result[1]) > 0
    finally:
        worker.close()
