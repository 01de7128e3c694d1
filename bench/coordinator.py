"""Benchmark of the coordinator: verify and anchor 1k- and 10k-trade batches (local stand-in).

Batches come from the real pipeline (tests/unit/coordinator/pipeline.py): an order log of
2 orders per trade replayed by edge.market, one commitment and at-least range proof per trade
(edge.zk), edge.batch sealing with an Ed25519 key. Making the proofs is most of the set-up (about
15 ms each): it runs on two worker processes and the sealed batches are cached under
~/.cache/neighbourgrid/bench-coordinator/ (``--fresh`` rebuilds them).

Measured in one run, per batch size, medians over ``--rounds`` (CPU time of this process,
``time.process_time``, so other work on the shared machine leaks in less; wall-clock medians
are printed too):

- **verify, end to end**: ``decode_batch`` of the uploaded bytes, then
  :func:`coordinator.verify.verify_batch` (every check); trades/s and ms per trade, against the
  goal of 3 ms per trade for a 10k-trade batch;
- the **shares** of its phases, each timed on its own in the same round: *proofs*
  (check_proofs: chunked batch verification), *replay* (check_replay: engine restore, log
  replay, comparison, plus the snapshot the chain keeps), *hashing* (decode, signature, Merkle
  root, digests, totals), *settlement* (check_settlement per trade), *other* (uniqueness,
  deliveries, chain);
- **service**: the same bytes POSTed to a running coordinator (HTTP, verification in a worker
  thread, the SQLite writes), one round per size (wall clock);
- **anchoring**: from acceptance to the batch anchored on the local Soroban stand-in (ledgers
  closed every 100 ms), one transaction per batch, whatever its size.

Run: ``.venv/bin/python bench/coordinator.py`` (``--sizes 1000`` for a quick run). The first run
spends a few minutes making proofs; later runs take about a minute and a half.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.verify import (
    ChainState,
    MemoryHistory,
    Rules,
    check_chain,
    check_deliveries,
    check_integrity,
    check_proofs,
    check_replay,
    check_settlements,
    check_signature,
    check_uniqueness,
    verify_batch,
)
from edge.batch import (
    TradeRecord,
    decode_batch,
    encode_batch,
)
from edge.market import Rates, Trade
from tests.unit.coordinator.pipeline import GatewaySim, make_record

CACHE = Path.home() / ".cache" / "neighbourgrid" / "bench-coordinator"
FORMAT = "v1"
GOAL_MS_PER_TRADE = 3.0


def _job(args: tuple[str, Trade, Rates]) -> TradeRecord:
    return make_record(*args)


def pool_prover(
    pool: ProcessPoolExecutor,
) -> Callable[[Sequence[tuple[str, Trade, Rates]]], list[TradeRecord]]:
    def prove(jobs: Sequence[tuple[str, Trade, Rates]]) -> list[TradeRecord]:
        return list(pool.map(_job, jobs, chunksize=64))

    return prove


def build(n: int, *, fresh: bool, workers: int) -> tuple[bytes, GatewaySim]:
    """The canonical bytes of a first batch of ``n`` trades, and the gateway that made it."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"batch-{n}-{FORMAT}.pickle"
    if path.exists() and not fresh:
        key_bytes, body, _registration = pickle.loads(path.read_bytes())
        sim = GatewaySim(gateway=f"bench-{n}", key=Ed25519PrivateKey.from_private_bytes(key_bytes))
        return body, sim
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        sim = GatewaySim(gateway=f"bench-{n}", prover=pool_prover(pool), homes=50)
        for _ in range(n):
            sim.pair()
        batch = sim.seal()
    body = encode_batch(batch)
    from cryptography.hazmat.primitives import serialization

    key_bytes = sim.key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    path.write_bytes(pickle.dumps((key_bytes, body, sim.registration())))
    print(
        f"  built the {n}-trade batch in {time.perf_counter() - started:.1f} s "
        f"({len(body) / 1e6:.1f} MB), cached in {path}",
        flush=True,
    )
    return body, sim


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c, time.perf_counter() - w, out


def verify_round(body: bytes, sim: GatewaySim, rules: Rules) -> dict[str, tuple[float, float]]:
    """One round: the end-to-end verification, then each phase on its own."""
    reg = {sim.gateway: sim.registry_key}
    history = MemoryHistory()
    chain = ChainState()
    out: dict[str, tuple[float, float]] = {}

    def e2e() -> Any:
        batch = decode_batch(body)
        return verify_batch(batch, registry=reg, chain=chain, history=history, rules=rules)

    cpu, wall, result = timed(e2e)
    assert result.verdict == "accepted", [f for f in result.findings if f.failed][:3]
    out["verify"] = (cpu, wall)

    cpu, wall, batch = timed(lambda: decode_batch(body))
    h_cpu, h_wall = cpu, wall
    for fn in (lambda: check_signature(batch, reg[sim.gateway]), lambda: check_integrity(batch)):
        cpu, wall, _ = timed(fn)
        h_cpu, h_wall = h_cpu + cpu, h_wall + wall
    out["hashing"] = (h_cpu, h_wall)
    cpu, wall, _ = timed(lambda: check_proofs(batch, rules))
    out["proofs"] = (cpu, wall)
    cpu, wall, _ = timed(lambda: check_settlements(batch, rules))
    out["settlement"] = (cpu, wall)

    def replay() -> Any:
        r = check_replay(batch, chain, history, rules)
        assert r.engine is not None
        return r.engine.snapshot()

    cpu, wall, _ = timed(replay)
    out["replay"] = (cpu, wall)

    def other() -> Any:
        check_chain(batch, chain, history)
        check_uniqueness(batch, history)
        return check_deliveries(batch, history)

    cpu, wall, _ = timed(other)
    out["other"] = (cpu, wall)
    return out


async def service_and_anchor(
    bodies: dict[int, tuple[bytes, GatewaySim]],
) -> dict[int, tuple[float, float]]:
    """POST each batch to a running coordinator anchoring on the stand-in: (accept s, anchor s)."""
    import aiohttp
    from stellar_sdk import Keypair

    from coordinator.config import parse_config
    from coordinator.service import running
    from coordinator.soroban import (
        LOCAL_PASSPHRASE,
        SorobanConfig,
        SqliteEnvelopeStore,
        Submitter,
        deploy_anchor_contract,
        local_soroban,
    )

    out: dict[int, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        async with local_soroban(ledger_close_ms=100) as rpc:
            kp = Keypair.random()
            await rpc.fund(kp.public_key)
            (base / "secret").write_text(kp.secret)
            (base / "admin").write_text("bench-admin-token-0123456789")
            sc = SorobanConfig(rpc_url=rpc.url, network_passphrase=LOCAL_PASSPHRASE, contract_id="")
            async with Submitter(
                config=sc,
                store=SqliteEnvelopeStore(path=":memory:"),
                keypair=kp,
                poll_interval_s=0.02,
            ) as sub:
                cid = await deploy_anchor_contract(submitter=sub)
            config = parse_config(
                {
                    "http": {"port": 0, "admin_token_file": "admin"},
                    "soroban": {
                        "rpc_url": rpc.url,
                        "contract_id": cid,
                        "secret_file": "secret",
                        "poll_interval_s": 0.02,
                    },
                },
                base=base,
            )
            async with running(config) as (_, url), aiohttp.ClientSession() as http:
                for n, (body, sim) in bodies.items():
                    async with http.post(
                        url + "/gateways",
                        json=sim.registration(),
                        headers={"Authorization": "Bearer bench-admin-token-0123456789"},
                    ) as r:
                        assert r.status in (200, 201), await r.text()
                    start = time.perf_counter()
                    async with http.post(url + "/batches", data=body) as r:
                        reply = await r.json()
                        assert r.status == 200, reply
                    accepted = time.perf_counter()
                    while True:
                        async with http.get(f"{url}/batches/{sim.gateway}/1") as r:
                            status = (await r.json())["anchor"]["status"]
                        if status == "anchored":
                            break
                        await asyncio.sleep(0.01)
                    out[n] = (accepted - start, time.perf_counter() - accepted)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--rounds", type=int, default=3, help="verification rounds per size")
    parser.add_argument("--fresh", action="store_true", help="rebuild the cached batches")
    parser.add_argument("--workers", type=int, default=2, help="processes making proofs")
    parser.add_argument("--no-anchor", action="store_true", help="skip the service and anchoring")
    args = parser.parse_args(argv)

    rules = Rules()
    bodies: dict[int, tuple[bytes, GatewaySim]] = {}
    for n in args.sizes:
        print(f"batch of {n} trades:", flush=True)
        bodies[n] = build(n, fresh=args.fresh, workers=args.workers)

    rows = []
    for n, (body, sim) in bodies.items():
        rounds = [verify_round(body, sim, rules) for _ in range(max(1, args.rounds))]
        med = {
            k: (
                statistics.median(r[k][0] for r in rounds),
                statistics.median(r[k][1] for r in rounds),
            )
            for k in rounds[0]
        }
        rows.append((n, len(body), med))
        print(f"  verified {n} trades x {len(rounds)} rounds", flush=True)

    print()
    print("verification, medians of CPU time (wall clock in brackets)")
    print(
        f"{'trades':>7} {'MB':>5} {'verify s':>16} {'ms/trade':>9} {'trades/s':>9} "
        f"{'proofs':>7} {'replay':>7} {'hashing':>8} {'settle':>7} {'other':>6}  goal"
    )
    for n, size, med in rows:
        cpu, wall = med["verify"]
        phases = ("proofs", "replay", "hashing", "settlement", "other")
        total = sum(med[p][0] for p in phases)
        shares = [f"{100 * med[p][0] / total:6.1f}%" for p in phases]
        ms = 1000 * cpu / n
        goal = "ok" if ms <= GOAL_MS_PER_TRADE else "MISSED"
        print(
            f"{n:>7} {size / 1e6:>5.1f} {cpu:>7.2f} [{wall:>6.2f}] {ms:>9.3f} {n / cpu:>9.0f} "
            f"{shares[0]:>7} {shares[1]:>7} {shares[2]:>8} {shares[3]:>7} {shares[4]:>6}  "
            f"{goal} (<= {GOAL_MS_PER_TRADE} ms/trade)"
        )
    if len(rows) >= 2:
        (n0, _, m0), (n1, _, m1) = rows[0], rows[-1]
        ratio = (m1["verify"][0] / n1) / (m0["verify"][0] / n0)
        print(f"per-trade cost, {n1} vs {n0} trades: x{ratio:.2f}")
    print("shares: each phase timed on its own in the same round, as a share of their sum")

    if not args.no_anchor:
        timings = asyncio.run(service_and_anchor(bodies))
        print()
        print("service (wall clock, one round): POST -> accepted, then accepted -> anchored")
        print(f"{'trades':>7} {'accept s':>9} {'ms/trade':>9} {'anchor s':>9}")
        for n, (accept, anchor) in timings.items():
            print(f"{n:>7} {accept:>9.2f} {1000 * accept / n:>9.3f} {anchor:>9.2f}")
    digest = hashlib.sha256(b"".join(b for b, _ in bodies.values())).hexdigest()[:16]
    print(f"\nbatches sha256 {digest} (cached in {CACHE})")


if __name__ == "__main__":
    main()
