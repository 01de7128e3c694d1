"""Benchmark of the main job, ``ngrid simulate``: wall time and peak memory as the neighbourhood
grows, with the meters' firmware on CPython and in the MicroPython VM (``--vm``).

    .venv/bin/python bench/simulate.py [--homes 24,96] [--days 1] [--modes cpython]
                                       [--timeout 900] [--seed 7] [--keep]

The full measurement (docs/performance.md, "Main job"; an hour or more on 2 cores):

    .venv/bin/python bench/simulate.py --homes 24,96,384 --modes cpython,vm

For each number of homes and each mode, one run of the installed command, as a user runs it:
``ngrid simulate --homes N --days D --seed S --no-progress --out <temporary dir>`` (``--vm`` in
the ``vm`` mode), the ``ngrid`` beside ``sys.executable``, in a session of its own. Measured:

* **wall s**: from the start of the process to its exit (``time.perf_counter``), so it includes
  the interpreter's start, the inputs (demandlib, pvlib), the broker, the gateway, the
  coordinator and the report;
* **s/home-day**: wall s / (homes x days); **growth** is that figure over the same mode's smallest
  run's (1.0: the cost grows linearly with the homes; 2.0: a home-day costs twice as much);
* **peak RSS MB**: the largest sum of the resident set sizes (``VmRSS`` in ``/proc/<pid>/status``)
  of the whole process tree at one moment, sampled every ``--sample-s`` (0.25 s) by a thread
  that walks ``/proc`` for the descendants of the ``ngrid`` process (the proof worker, the
  Mosquitto the run starts, and with ``--vm`` one Node process per battery home's meter). A sum
  of RSS counts pages shared between processes (Node's code, Python's) once per process, so it
  overstates what the tree takes; a spike shorter than the sampling period can be missed.
  **largest MB** is exact and has neither flaw but sees one process only: ``ru_maxrss`` from
  ``wait4`` of the ``ngrid`` process, the peak of the largest single process among it and its
  reaped descendants. (psutil is not used: it is installed only as amqtt's dependency.)
* **trades**: from the run's ``summary.json``.

A run that takes longer than ``--timeout`` seconds is killed (its whole session) and reported as
timed out, a figure like any other; a run that exits non-zero is reported as failed with the end
of its stderr, and makes the script exit 1. The last line of the output is one JSON object with
every figure. Linux only (``/proc``, ``wait4``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from neighbourgrid.simulate.scenario import MAX_HOMES, MIN_HOMES  # noqa: E402

NGRID = Path(sys.executable).with_name("ngrid")
MODES = ("cpython", "vm")


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, from every ``/proc/<pid>/stat``."""
    out: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses; split after the last ')'
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants alive now."""
    children = _children_map()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def rss_kb(pid: int) -> int:
    """``VmRSS`` of ``pid`` in kB (0 if it is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process tree until stopped; keeps the peak."""

    def __init__(self, root: int, period_s: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.root, self.period_s = root, period_s
        self.peak_kb = 0
        self.peak_processes = 0
        self.max_processes = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            tree = process_tree(self.root)
            total = sum(rss_kb(pid) for pid in tree)
            self.samples += 1
            self.max_processes = max(self.max_processes, len(tree))
            if total > self.peak_kb:
                self.peak_kb, self.peak_processes = total, len(tree)
            self._halt.wait(self.period_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def run_one(homes: int, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix=f"ngrid-bench-sim-{homes}-{mode}-"))
    run_dir = out / "run"
    cmd = [
        str(NGRID),
        "simulate",
        "--homes",
        str(homes),
        "--days",
        str(args.days),
        "--seed",
        str(args.seed),
        "--no-progress",
        "--out",
        str(run_dir),
    ]
    if mode == "vm":
        cmd.append("--vm")
    result: dict[str, Any] = {"homes": homes, "mode": mode, "days": args.days}
    with open(out / "stdout.txt", "wb") as stdout, open(out / "stderr.txt", "wb") as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, start_new_session=True)
        sampler = TreeSampler(proc.pid, args.sample_s)
        sampler.start()
        deadline = started + args.timeout
        status, rusage, timed_out = 0, None, False
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if time.perf_counter() > deadline:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)  # the whole session: Node, Mosquitto too
                _, status, rusage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        sampler.stop()
    with contextlib.suppress(ProcessLookupError):  # nothing of the run outlives it
        os.killpg(proc.pid, signal.SIGKILL)
    result.update(
        wall_s=round(wall, 2),
        s_per_home_day=round(wall / (homes * args.days), 4),
        peak_rss_mb=round(sampler.peak_kb / 1024, 1),
        mb_per_home=round(sampler.peak_kb / 1024 / homes, 2),
        largest_process_mb=round(rusage.ru_maxrss / 1024, 1) if rusage else None,
        processes=sampler.max_processes,
        rss_samples=sampler.samples,
        returncode=proc.returncode,
    )
    if timed_out:
        result["status"] = f"timed out (> {args.timeout:g} s)"
    elif proc.returncode != 0:
        result["status"] = f"failed (exit {proc.returncode})"
        tail = (out / "stderr.txt").read_text(errors="replace").strip().splitlines()[-5:]
        result["stderr_tail"] = tail
    else:
        result["status"] = "ok"
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        result["trades"] = summary.get("trades")
    except (OSError, ValueError):
        result["trades"] = None
    if args.keep:
        result["out"] = str(out)
    else:
        shutil.rmtree(out, ignore_errors=True)
    return result


def growth(results: list[dict[str, Any]]) -> None:
    """Each ok run's s/home-day over its mode's smallest ok run's."""
    for mode in MODES:
        runs = [r for r in results if r["mode"] == mode and r["status"] == "ok"]
        if not runs:
            continue
        base = min(runs, key=lambda r: r["homes"] * r["days"])["s_per_home_day"]
        for r in runs:
            r["growth"] = round(r["s_per_home_day"] / base, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--homes", default="24,96", help="comma-separated numbers of homes (default 24,96)"
    )
    parser.add_argument("--days", type=int, default=1, help="simulated days per run (default 1)")
    parser.add_argument(
        "--modes", default="cpython", help="comma-separated: cpython, vm (default cpython)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run (900)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample-s", type=float, default=0.25, help="RSS sampling period")
    parser.add_argument("--keep", action="store_true", help="keep each run's --out directory")
    args = parser.parse_args(argv)
    homes = [int(h) for h in args.homes.split(",") if h.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        parser.error(f"unknown mode {bad[0]!r}: cpython or vm")
    if not all(MIN_HOMES <= h <= MAX_HOMES for h in homes):
        parser.error(f"--homes: each must be {MIN_HOMES}..{MAX_HOMES} (the simulation's limits)")
    if not 1 <= args.days <= 14:
        parser.error("--days must be 1..14")
    if not NGRID.exists():
        parser.error(f"{NGRID} is missing: install the project (make deps)")

    load_before = os.getloadavg()[0]
    results = []
    for n in homes:
        for mode in modes:
            print(f"running {n} homes, {args.days} day(s), {mode} ...", file=sys.stderr, flush=True)
            results.append(run_one(n, mode, args))
            r = results[-1]
            print(f"  {r['status']}, {r['wall_s']} s", file=sys.stderr, flush=True)
    growth(results)

    print(
        f"\nngrid simulate, {args.days} day(s), seed {args.seed}; {os.cpu_count()} cores, "
        f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"RSS summed over the process tree every {args.sample_s:g} s\n"
    )
    header = (
        f"{'homes':>6} {'mode':<8}{'wall s':>9}{'s/home-day':>12}{'peak RSS MB':>13}"
        f"{'MB/home':>9}{'largest MB':>12}{'procs':>7}{'trades':>8}{'growth':>8}  status"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        trades = "-" if r["trades"] is None else str(r["trades"])
        grow = f"{r['growth']:.2f}" if "growth" in r else "-"
        largest = "-" if r["largest_process_mb"] is None else f"{r['largest_process_mb']:.1f}"
        print(
            f"{r['homes']:>6} {r['mode']:<8}{r['wall_s']:>9.1f}{r['s_per_home_day']:>12.3f}"
            f"{r['peak_rss_mb']:>13.1f}{r['mb_per_home']:>9.2f}{largest:>12}{r['processes']:>7}"
            f"{trades:>8}{grow:>8}  {r['status']}"
        )
        for line in r.get("stderr_tail", []):
            print(f"{'':>15}| {line}")
    print("growth: s/home-day over the same mode's smallest run (1.0 = linear)")
    print(
        json.dumps(
            {
                "bench": "simulate",
                "days": args.days,
                "seed": args.seed,
                "cores": os.cpu_count(),
                "runs": results,
            }
        )
    )
    # A run that timed out is a figure (reported as such); one that failed fails the bench.
    return 1 if any(r["status"].startswith("failed") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
