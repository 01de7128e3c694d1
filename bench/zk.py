"""Benchmark of the privacy core (edge.zk) against dalek's bulletproofs, measured in one run.

Ours: prove, verify one, and batch verification per proof (batches of 16 and 64) for the SoC
statement "SoC in [2000, 10000] basis points" (n = 16 bits, two values aggregated), and the proof
size; first on the plain path (one libsecp256k1 multiplication per point), then after
``edge.zk.precompute(16)`` (fixed-base tables for the generators), whose cost is printed too.

Anchor: dalek-cryptography's ``bulletproofs`` 4.0 (Rust, curve25519-dalek-ng serial backend)
through the ``pybulletproofs`` wheel, which exists only for CPython 3.10: the script makes a side
venv for it (never a dependency of the project) under ~/.cache/neighbourgrid/bench-py310 from a
Python 3.10 found as $NGRID_PY310, ``uv python find 3.10``, pyenv's versions or python3.10 on
PATH. Without one it says so and prints our figures alone. pybulletproofs builds
``BulletproofGens::new(64, 1)`` (128 hash-to-Ristretto generators) inside every call; the script
measures that set-up on its own (a verify call with bit size 7, which dalek refuses after building
the generators and parsing the proof) and reports dalek's verify less that set-up ("core"), the
fair anchor for a verifier that keeps its generators.

Times are medians of per-call CPU time of the measuring process (``time.process_time``), so that
other work on a shared machine does not leak into one side more than the other; wall-clock medians
of the same calls are printed below the table. Run: ``.venv/bin/python bench/zk.py`` (``--quick``
for fewer rounds); about a minute, most of it building tables and proofs.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from edge.zk import commit, precompute, prove_range, verify_batch, verify_range

LO, HI = 2000, 10_000
CONTEXT = b"gateway=gw-1;trade=42;epoch=7"
SIDE_VENV = Path.home() / ".cache" / "neighbourgrid" / "bench-py310"
Figures = dict[str, tuple[float, float]]  # name -> (CPU median s, wall median s)

DALEK_SCRIPT = r"""
import json, statistics, sys, time
import pybulletproofs as bp
rounds = int(sys.argv[1])
def median(fn, k):
    cpu, wall = [], []
    for _ in range(k):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c); wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall)
out = {}
for bits in (16, 32):
    proof, comm, _ = bp.zkrp_prove(6400, bits)
    assert bp.zkrp_verify(proof, comm, bits)
    assert not bp.zkrp_verify(proof, comm, 7)
    out[bits] = {
        "size": (len(proof), len(proof)),
        "prove": median(lambda: bp.zkrp_prove(6400, bits), max(rounds // 4, 5)),
        "verify": median(lambda: bp.zkrp_verify(proof, comm, bits), rounds),
        "setup": median(lambda: bp.zkrp_verify(proof, comm, 7), rounds),
    }
print(json.dumps(out))
"""


def median(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Medians of CPU time and wall time of ``fn`` in seconds over ``rounds`` calls."""
    cpu, wall = [], []
    for _ in range(rounds):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall)


def per_proof(figures: tuple[float, float], count: int) -> tuple[float, float]:
    return figures[0] / count, figures[1] / count


def ours(rounds: int) -> Figures:
    commitment, opening = commit(6400)
    proof = prove_range(opening, LO, HI, CONTEXT)
    assert verify_range(commitment, LO, HI, CONTEXT, proof)
    out: Figures = {
        "size": (len(proof), len(proof)),
        "prove": median(lambda: prove_range(opening, LO, HI, CONTEXT), max(rounds // 4, 5)),
        "verify": median(lambda: verify_range(commitment, LO, HI, CONTEXT, proof), rounds),
    }
    items = []
    for i in range(64):
        c, o = commit(LO + 100 * i)
        context = CONTEXT + i.to_bytes(2, "big")
        items.append((c, LO, HI, context, prove_range(o, LO, HI, context)))
    for size in (16, 64):
        batch = items[:size]
        assert verify_batch(batch)
        timed = median(lambda b=batch: verify_batch(b), max(rounds // 10, 3))
        out[f"batch{size}"] = per_proof(timed, size)
    return out


def find_python310() -> str | None:
    candidates = [os.environ.get("NGRID_PY310", "")]
    if shutil.which("uv"):
        found = subprocess.run(
            ["uv", "python", "find", "3.10"], capture_output=True, text=True, check=False
        )
        candidates.append(found.stdout.strip())
    candidates += sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.10*/bin/python3.10")))
    candidates.append(shutil.which("python3.10") or "")
    return next((c for c in candidates if c and Path(c).exists()), None)


def dalek(rounds: int) -> tuple[dict[str, Figures] | None, str]:
    py = SIDE_VENV / "bin" / "python"
    if not py.exists():
        base = find_python310()
        if base is None:
            return None, "none: no CPython 3.10 here (pybulletproofs has wheels for cp310 only)"
        subprocess.run([base, "-m", "venv", str(SIDE_VENV)], check=True)
    check = subprocess.run([py, "-c", "import pybulletproofs"], capture_output=True, check=False)
    if check.returncode != 0:
        install = subprocess.run(
            [py, "-m", "pip", "install", "--quiet", "--only-binary=:all:", "pybulletproofs"],
            capture_output=True,
            text=True,
            check=False,
        )
        if install.returncode != 0:
            return None, f"none: pip could not install pybulletproofs: {install.stderr[-300:]}"
    run = subprocess.run(
        [py, "-c", DALEK_SCRIPT, str(rounds)], capture_output=True, text=True, check=False
    )
    if run.returncode != 0:
        return None, f"none: the pybulletproofs run failed: {run.stderr.strip()[-300:]}"
    version = subprocess.run(
        [py, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    raw = json.loads(run.stdout)
    figures = {bits: {k: (v[0], v[1]) for k, v in d.items()} for bits, d in raw.items()}
    for d in figures.values():
        d["core"] = (d["verify"][0] - d["setup"][0], d["verify"][1] - d["setup"][1])
    return figures, f"dalek bulletproofs 4.0 via pybulletproofs 0.1.0.dev7, CPython {version}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="edge.zk against dalek's bulletproofs")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args(argv)
    rounds = 20 if args.quick else 100

    plain = ours(rounds)
    anchor, note = dalek(rounds)
    built = median(lambda: precompute(16), 1)
    tables = ours(rounds)

    columns: list[tuple[str, Figures | None]] = [("plain", plain), ("tables", tables)]
    if anchor:
        columns += [("dalek 16", anchor["16"]), ("dalek 32", anchor["32"])]
    print(f"edge.zk, SoC in [{LO}, {HI}] bp: n = 16 bits, m = 2 (v - lo, hi - v) aggregated")
    print(f"anchor: {note}")
    print(f"load average at start of report: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print()
    print(f"{'median CPU time per call':36}" + "".join(f"{name:>11}" for name, _ in columns))

    def row(label: str, key: str, scale: float = 1e3, which: int = 0) -> None:
        cells = []
        for _, figs in columns:
            value = figs.get(key) if figs else None
            cells.append(f"{value[which] * scale:11.3f}" if value else f"{'-':>11}")
        print(f"{label:36}" + "".join(cells))

    row("prove [ms]", "prove")
    row("verify one [ms]", "verify")
    row("verify, per proof, batch of 16 [ms]", "batch16")
    row("verify, per proof, batch of 64 [ms]", "batch64")
    row("proof size [bytes]", "size", scale=1)
    row("dalek: generator set-up per call", "setup")
    row("dalek: verify less set-up (core)", "core")
    print(f"precompute(16), once: {built[0]:.2f} s CPU, 66 tables of 512 KiB")
    print()
    print("wall-clock medians of the same calls [ms]:")
    row("  verify one", "verify", which=1)
    row("  verify, per proof, batch of 64", "batch64", which=1)

    print()
    size = plain["size"][0]
    print(f"goal proof <= 700 bytes: {'met' if size <= 700 else 'MISSED'} ({size:.0f} bytes)")
    if not anchor:
        print("goals against dalek: not measured (no anchor in this run)")
        return
    d32, d16 = anchor["32"], anchor["16"]
    print("dalek 32 (one 32-bit value) has the same vector length, 32, as our two-sided 16-bit")
    print("proof; dalek 16 (one 16-bit value, one-sided) is half of it. Ratios ours / dalek:")
    for label, ours_key in (("verify one", "verify"), ("batch-64 per proof", "batch64")):
        for path, figs in (("plain", plain), ("tables", tables)):
            mine = figs[ours_key][0]
            print(
                f"  {label:18} {path:6}: {mine / d32['core'][0]:5.2f}x dalek-32 core, "
                f"{mine / d32['verify'][0]:5.2f}x dalek-32 as called, "
                f"{mine / d16['core'][0]:5.2f}x dalek-16 core"
            )
    for path, figs in (("plain", plain), ("tables", tables)):
        print(f"  {'prove':18} {path:6}: {figs['prove'][0] / d32['prove'][0]:5.2f}x dalek-32")
    core = d32["core"][0]
    batch_ok = min(plain["batch64"][0], tables["batch64"][0]) < core
    print(f"goal batch per proof faster than dalek single verify (32 core): {_met(batch_ok)}")
    for path, figs in (("plain", plain), ("tables", tables)):
        ok = figs["verify"][0] <= 2 * core
        print(f"goal single verify within 2x of dalek (32 core), {path}: {_met(ok)}")


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


if __name__ == "__main__":
    main()
