"""The compiled (mypyc) and the interpreted market core give the same bytes; a stale build is
never run.

``make market`` compiles ``edge/market/events.py`` and ``engine.py`` in place (docs/market.md,
"Compiled build"). These tests replay one busy log in subprocesses, one forced interpreted with
``NGRID_MARKET_PURE=1`` and one as the checkout is (compiled when built), each with its own hash
seed, and want the same output lines, snapshot and final state from both. Without a build both
run interpreted and the test still checks determinism across processes and hash seeds.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge.market import (
    Cancel,
    CloseInterval,
    Engine,
    Event,
    MarketParams,
    Offer,
    Order,
    Prune,
    ReferencePrice,
    Reserve,
    Void,
    encode_event,
    is_compiled,
)
from edge.market._native import COMPILED_MODULES, PURE_ENV, STAMP, source_digests

ROOT = Path(__file__).resolve().parents[3]
MARKET = ROOT / "edge" / "market"
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]

# Replays a log in a fresh process and prints what the test compares, as JSON.
REPLAY = textwrap.dedent(
    """
    import json, sys
    from edge.market import Engine, MarketParams, is_compiled, replay_to_lines, iter_log
    path, policy, bound = sys.argv[1], sys.argv[2], sys.argv[3]
    params = MarketParams(policy=policy, max_matches=int(bound) or None)
    lines = open(path, encoding="utf-8").read().splitlines()
    out = replay_to_lines(lines, params, reservations=True)
    engine = Engine(params=params)
    for _, event in iter_log(lines):
        engine.submit(event)
    print(json.dumps({"compiled": is_compiled(), "lines": out,
                      "snapshot": engine.snapshot().decode()}))
    """
)


def busy_log(seed: int, params: MarketParams, n: int = 1500) -> list[Event]:
    """A valid log exercising every rule: three intervals, self-trades, cancels, reference-price
    swings, voids of earlier trades, interval closes and prunes, offers and reservations. (Which
    trades exist to be voided depends on ``params``.)"""
    rng = random.Random(seed)
    engine = Engine(params=params)  # to know which trades exist, for voids
    events: list[Event] = []
    ids: list[str] = []
    open_intervals = [0, 1, 2]
    closed: list[int] = []
    voided: set[str] = set()
    for ts in range(n):
        roll = rng.random()
        event: Event
        if roll < 0.75 or not ids:
            oid = f"o{ts}"
            ids.append(oid)
            event = Order(
                oid,
                f"h{rng.randrange(12)}",
                rng.choice(["buy", "sell"]),
                rng.choice([rng.randint(1, 50), rng.randint(50, 900)]),
                rng.randint(95, 105),
                ts,
                rng.choice(open_intervals),
            )
        elif roll < 0.85:
            event = Cancel(rng.choice(ids), ts)
        elif roll < 0.91:
            event = ReferencePrice(rng.choice([0, 97, 100, 103]), ts)
        elif roll < 0.96:
            live = [t.id for t in engine.trades() if t.id not in voided]
            if not live:
                continue
            trade = rng.choice(live)
            voided.add(trade)
            event = Void(trade, ts)
        elif roll < 0.97 and len(open_intervals) > 1:
            closed.append(open_intervals.pop(0))
            event = CloseInterval(closed[-1], ts)
        elif roll < 0.975 and closed and closed[-1] != engine.pruned_through:
            event = Prune(closed[-1], ts)
        elif roll < 0.985:
            tiers = ((2, 10), (3, 18))
            event = Offer(f"f{ts}", f"h{rng.randrange(12)}", 500, 0, 40, tiers, ts)
        else:
            slots = rng.randint(1, 8)
            event = Reserve(f"r{ts}", f"h{rng.randrange(12)}", 200, rng.randrange(30), slots, 9, ts)
        engine.submit(event)
        events.append(event)
        if type(event) is Prune:  # cancels name only the orders the engine keeps
            ids = [oid for oid in ids if engine.order(oid) is not None]
    return events


def replay_in_subprocess(
    log: Path, policy: str, bound: int, *, pure: bool, seed: str, stale: bool
) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    env.pop(PURE_ENV, None)
    if pure:
        env[PURE_ENV] = "1"
    result = subprocess.run(
        [sys.executable, "-c", REPLAY, str(log), policy, str(bound)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    # An out-of-date build is passed over with a warning (and the source runs).
    assert ("RuntimeWarning" in result.stderr) == (stale and not pure), result.stderr
    return json.loads(result.stdout)


def build_exists() -> bool:
    return any((MARKET / f"{name}{SUFFIX}").exists() for name in COMPILED_MODULES)


def build_is_current() -> bool:
    """Whether ``make market`` has built extensions that match the sources as they are."""
    if not all((MARKET / f"{name}{SUFFIX}").exists() for name in COMPILED_MODULES):
        return False
    try:
        return json.loads((MARKET / STAMP).read_text())["sources"] == source_digests()
    except (OSError, ValueError, KeyError):
        return False


def test_compiled_and_interpreted_replays_are_byte_identical(tmp_path):
    built = build_is_current()
    stale = build_exists() and not built
    assert is_compiled() == (built and os.environ.get(PURE_ENV) != "1")
    for policy, bound in [("price-time", 0), ("value-time", 0), ("price-time", 2)]:
        events = busy_log(seed=7, params=MarketParams(policy=policy, max_matches=bound or None))
        log = tmp_path / f"busy-{policy}-{bound}.jsonl"
        log.write_text("".join(encode_event(e) + "\n" for e in events), encoding="utf-8")
        pure = replay_in_subprocess(log, policy, bound, pure=True, seed="1", stale=stale)
        default = replay_in_subprocess(log, policy, bound, pure=False, seed="2", stale=stale)
        assert pure["compiled"] is False
        assert default["compiled"] is built
        assert len(pure["lines"]) > 100, "the log makes plenty of trades"
        assert any('"kind":"reservation"' in line for line in pure["lines"])
        assert default["lines"] == pure["lines"]
        assert default["snapshot"] == pure["snapshot"]
    if not built:
        # The runs above still compared two interpreted replays under different hash seeds;
        # the compiled side of the comparison needs `make market` (make test runs it).
        pytest.skip("no current compiled build of edge.market: run `make market` to compare it")


def copy_package(dest: Path) -> Path:
    """A copy of the ``edge`` package's market core (sources only) under ``dest``."""
    pkg = dest / "edge"
    (pkg / "market").mkdir(parents=True)
    for name in ("__init__.py", "errors.py"):
        shutil.copy(ROOT / "edge" / name, pkg / name)
    for src in MARKET.glob("*.py"):
        shutil.copy(src, pkg / "market" / src.name)
    return pkg / "market"


IMPORT = (
    "import edge.market, edge.market.engine as m; "
    "print(edge.market.is_compiled(), m.__file__.endswith('.py'))"
)


def test_a_build_without_a_matching_stamp_is_not_loaded(tmp_path):
    """Extension files (here not even loadable: garbage bytes) without a stamp, or with a stamp
    of other sources, are passed over with a warning and the sources run; where warnings are
    errors (``-W error``) the import still succeeds."""
    market = copy_package(tmp_path)
    for name in (*COMPILED_MODULES, "_compiled__mypyc"):
        (market / f"{name}{SUFFIX}").write_bytes(b"not an extension module")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    env.pop(PURE_ENV, None)
    stale = {"sources": {name: "0" * 64 for name in COMPILED_MODULES}}
    for stamp in (None, stale):
        if stamp is not None:
            (market / STAMP).write_text(json.dumps(stamp))
        for flags in ([], ["-W", "error"]):
            result = subprocess.run(
                [sys.executable, *flags, "-c", IMPORT],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp_path,
                timeout=60,
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout.split() == ["False", "True"]
            if not flags:
                assert "RuntimeWarning" in result.stderr and "make market" in result.stderr


def test_compiled_orders_trades_and_records_are_not_tracked_by_the_collector():
    """``mypyc_attr(acyclic=True)``: their fields are strings, ints and (records) a set of
    strings, so they can be in no reference cycle, and the compiled build leaves them out of the
    cyclic collector (which would otherwise walk every order and trade of a long replay)."""
    import gc

    import edge.market.engine as engine

    trades = engine.replay(
        [Order("s1", "a", "sell", 5, 10, 1), Order("b1", "b", "buy", 5, 10, 2)], MarketParams()
    )
    objects = [trades[0], Order("x", "a", "buy", 1, 1, 0), engine._Book(), engine._Level(1, [], [])]
    objects.append(engine._Rec("x", "a", True, 1, 1, 1, 0, 1, 0, 0, None))
    if not is_compiled():
        pytest.skip("interpreted: these are ordinary (tracked) objects")
    assert [gc.is_tracked(x) for x in objects] == [False] * len(objects)


def test_the_interpreted_core_needs_no_mypy_extensions(tmp_path):
    """Without mypy installed (so without ``mypy_extensions``) the source still imports and runs:
    ``mypyc_attr`` falls back to a no-op decorator."""
    code = (
        "import sys; sys.modules['mypy_extensions'] = None\n"
        "from edge.market import Engine, Order, is_compiled\n"
        "e = Engine(); e.submit(Order('s', 'a', 'sell', 5, 10, 1))\n"
        "print(is_compiled(), e.submit(Order('b', 'b', 'buy', 5, 10, 2))[0].to_json())\n"
    )
    env = {**os.environ, PURE_ENV: "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('False {"buy":"b","buyer":"b","id":"t1"')
