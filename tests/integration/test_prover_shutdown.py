"""The proof worker's shutdown: the gateway stops with proofs in flight, quietly.

A 96-home simulation ended with the worker's ``BrokenPipeError`` traceback (twice, chained): the
worker finished a proof after the gateway had closed its end of the pipe, and its ``send`` failed,
then failed again reporting the first failure. Now the gateway tells the worker to stop when it
closes, and a worker that finds its pipe closed exits without a word; a worker that dies for
another reason is still logged by the gateway.

The first test runs the gateway service in a child process on a real Mosquitto, with the worker
as production starts it (a ``forkserver`` child whose stderr is the gateway's), keeps it busy with
proofs, stops the service and reads everything the child wrote to stderr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge.gateway.prover import ProofWorker
from tests.brokers import Broker

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from pathlib import Path

    from edge.gateway.service import GatewayService, setup_logging
    from tests.integration.gateway_harness import gateway_config, load

    port, directory, proofs = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])

    async def main() -> None:
        config = load(gateway_config(directory, port=port, prefix="ngrid/shutdown"), directory)
        service = GatewayService(config=config, tick_s=0.05, handle_signals=False)
        task = asyncio.create_task(service.run())
        async with asyncio.timeout(30):
            await service.ready.wait()
            await service.mqtt_connected.wait()
        answered = []
        first = asyncio.get_running_loop().create_future()

        def done(result, error):
            answered.append(error)
            if not first.done():
                first.set_result(None)

        # As the service's _prove does: a burst of proofs, some in the worker's pipe, the rest
        # waiting in the gateway; stop once the worker is busy answering.
        for i in range(proofs):
            service.prover.submit(6000, 2000, 500, b"shutdown-%d" % i, done)
        await asyncio.wait_for(first, 60)
        in_flight = service.prover.backlog
        pid = service.prover.pid
        service.stop()
        async with asyncio.timeout(30):
            await task
        print(json.dumps({"answered": len(answered), "in_flight": in_flight, "pid": pid}))

    setup_logging("info")  # as `ngrid gateway run` does: JSON lines on stderr
    asyncio.run(main())
    """
)


@pytest.mark.timeout(120)
def test_stopping_the_gateway_with_proofs_in_flight_writes_no_traceback(
    mosquitto: Broker, tmp_path: Path
) -> None:
    for attempt in range(3):  # the worker must still be proving when the gateway stops
        run = subprocess.run(
            [sys.executable, "-c", CHILD, str(mosquitto.port), str(tmp_path / f"g{attempt}"), "64"],
            capture_output=True,
            text=True,
            timeout=100,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert run.returncode == 0, run.stderr
        assert "Traceback" not in run.stderr, run.stderr
        assert "BrokenPipeError" not in run.stderr, run.stderr
        assert "ConnectionResetError" not in run.stderr, run.stderr
        # Everything on stderr is the gateway's log: JSON lines, no warning about the worker.
        records = [json.loads(line) for line in run.stderr.splitlines() if line.strip()]
        assert not [r for r in records if "proof worker" in str(r.get("event"))], records
        figures = json.loads(run.stdout.strip().splitlines()[-1])
        with pytest.raises(ProcessLookupError):
            os.kill(figures["pid"], 0)  # the worker is gone, not orphaned
        if figures["in_flight"] > 0 and figures["answered"] < 64:
            return
    pytest.fail(f"the worker was never busy when the gateway stopped: {figures}")


@pytest.mark.timeout(60)
async def test_a_worker_that_dies_is_logged_and_its_proofs_fail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    worker = ProofWorker()
    worker.attach(loop)
    try:
        await worker.warm_up()
        errors: list[str | None] = []
        all_in = loop.create_future()

        def done(result: tuple[bytes, bytes] | None, error: str | None) -> None:
            errors.append(error)
            if len(errors) == 8 and not all_in.done():
                all_in.set_result(None)

        for i in range(8):
            worker.submit(6000, 2000, 0, b"ctx-%d" % i, done)
        assert worker.pid is not None
        with caplog.at_level(logging.ERROR, logger="ngrid.gateway.prover"):
            os.kill(worker.pid, signal.SIGKILL)
            await asyncio.wait_for(all_in, timeout=30)
        assert any(e == "the proof worker exited" for e in errors)
        assert [r for r in caplog.records if "exited" in r.getMessage()], caplog.records
    finally:
        worker.close()
