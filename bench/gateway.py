"""Benchmark of the gateway: order to lock-command latency, CPU share and peak RSS, event-driven
matching side by side with the reference Go engine's design (matching on a 5 s poll).

    .venv/bin/python bench/gateway.py [--meters 500] [--rate 100] [--seconds 30]
                                      [--crossing 0.1] [--modes event,poll,event-prove-first]
                                      [--fleet-nice 10] [--interval-s 900]

Setup, one run per mode, same load each time:

* a real Mosquitto on loopback (tests.brokers), anonymous;
* the gateway on its default settings but for the lock timeout (5 s): batches are sealed every
  100 trades, three times in a 30 s run, as a busy site would;
* the gateway as its own process: ``ngrid gateway run`` for the event-driven modes, and for
  ``poll`` the same service with :class:`PollingCore`, which logs each order at once but matches
  only every 5 s, as the reference engine's ticker does;
* ``--meters`` meters in a separate fleet process, each with its own MQTT connection, reporting
  signed ``state`` messages at 1 Hz and answering lock commands: by default the real firmware
  (device/ngmeter) hosted on CPython by hil.virtual, one thread per meter (``--meter-kind
  virtual``); ``--meter-kind stand-in`` uses a light asyncio client speaking the same edge.wire
  format that acknowledges every command. The fleet runs at ``--fleet-nice`` (10): on a site
  the meters are boards of their own, here their 500 threads share the gateway's cores, and at
  the same priority they would take turns with it (``--fleet-nice 0`` measures that too);
* delivery intervals of ``--interval-s`` (900, the default): a short interval with a long run
  (``--interval-s 10 --seconds 180``) shows whether memory stays flat as finished intervals are
  pruned (docs/gateway.md, "Memory");
* ``--rate`` orders per second over the homes' HTTP API, on a fixed schedule (not waiting for
  answers): 45 % sells resting at 200-300 ticks/kWh, 45 % buys resting at 120-190 (below every
  sell), and ``--crossing`` (10 %) buys at 400 that take the best sell at once (10 Wh each).

Latency: from just before the crossing buy's POST to the arrival of its lock command at a
subscriber on the broker (``ngrid/<gw>/+/cmd``, its own process), both on the system's monotonic
clock; the lock is tied to its order through the gateway's ledger after the run (trade id -> buy
order id). ``in-gw`` is the gateway's own view (``/v1/status``): API arrival to the moment the
command is handed to the MQTT client, which includes the order log's fsync.
CPU share: the gateway's utime+stime over the load window divided by the wall time, for the main
process and for its proof worker (edge.zk runs in a separate process). Peak RSS: VmHWM.

Modes: ``event`` sends the lock right after the SoC check and proves meanwhile (the default,
``[locks] prove_before_lock = false``; the proof is awaited before settlement);
``event-prove-first`` makes the range proof before the lock (``prove_before_lock = true``);
``poll`` is ``event`` with 5 s polling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import aiomqtt  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from edge.errors import GatewayError  # noqa: E402
from edge.gateway.core import Append, Effect, GatewayCore, OrderRejected  # noqa: E402
from edge.market import InvalidEvent, Order, event_to_dict  # noqa: E402
from edge.wire import parse_command, seal  # noqa: E402
from hil.mosquitto import free_port, running_mosquitto  # noqa: E402

GATEWAY = "gwbench"
PREFIX = f"ngrid/{GATEWAY}"
POLL_MS = 5000
CLK = os.sysconf("SC_CLK_TCK")


class PollingCore(GatewayCore):
    """The reference engine's design: orders are accepted (and logged) at once, but matched
    only when a 5 s ticker fires. Everything after matching is the gateway's own code."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._queued: list[Order] = []
        self._next_poll = 0

    def place(
        self, *, home: str, side: str, wh: int, price: int, interval: int | None, now: int
    ) -> tuple[str, list[Effect]]:
        if interval is None:
            interval = self.current_interval(now)
        order_id = f"o{self.log_seq + 1}"
        event = Order(order_id, home, side, wh, price, now, interval)
        try:
            self.engine.check(event)
        except InvalidEvent as err:
            raise OrderRejected(str(err)) from err
        self.log_seq += 1
        self._queued.append(event)
        self.home_orders.setdefault(home, []).append(order_id)
        return order_id, [Append(({"seq": self.log_seq, **event_to_dict(event)},))]

    def tick(self, *, now: int) -> list[Effect]:
        out = super().tick(now=now)
        if now >= self._next_poll:
            self._next_poll = now + POLL_MS
            for event in self._queued:
                self._on_trades(self.engine.submit(event), now, out)
            self._queued.clear()
        return out


def serve_polling(config_path: str) -> None:
    """Internal: run the gateway service with :class:`PollingCore` (the ``poll`` mode)."""
    from edge.gateway.config import load_config
    from edge.gateway.service import GatewayService, setup_logging

    config = load_config(Path(config_path))
    setup_logging(config.log_level)

    async def main() -> None:
        await GatewayService(config=config, core_class=PollingCore).run()

    try:
        asyncio.run(main())
    except* GatewayError as group:
        raise SystemExit(str(group.exceptions[0])) from None


# ---------------------------------------------------------------------- setup


def write_config(
    directory: Path,
    *,
    meters: int,
    mqtt_port: int,
    api_port: int,
    prove_first: bool,
    interval_s: int = 900,
) -> Path:
    key = Ed25519PrivateKey.generate()
    (directory / "gateway.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    registry = [
        {
            "id": f"m{i}",
            "mac_key": meter_key(i).hex(),
            "capacity_wh": 10_000,
            "reserve_bp": 2000,
            "owner": f"h{i}",
        }
        for i in range(meters)
    ]
    (directory / "meters.json").write_text(json.dumps({"meters": registry}))
    homes = "".join(f'[[homes]]\nid = "h{i}"\ntoken = "{token(i)}"\n' for i in range(meters))
    text = f"""\
[gateway]
id = "{GATEWAY}"
signing_key = "gateway.key"
meters = "meters.json"
log_level = "warning"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}

[api]
port = {api_port}

[market]
interval_s = {interval_s}

[locks]
timeout_ms = 5000
prove_before_lock = {"true" if prove_first else "false"}

[telemetry]
max_age_s = 30

{homes}"""
    path = directory / "gateway.toml"
    path.write_text(text)
    return path


def meter_key(i: int) -> bytes:
    return i.to_bytes(4, "big") * 8


def token(i: int) -> str:
    return f"bench-token-{i:06d}-xxxxxxxx"


# ---------------------------------------------------------------------- load


async def meter(i: int, port: int, stop: asyncio.Event, counters: dict[str, int]) -> None:
    """One meter stand-in: 1 Hz signed state; an ok ack for each command (edge.wire)."""
    name, key = f"m{i}", meter_key(i)
    seq = 0

    def state() -> bytes:
        nonlocal seq
        seq += 1
        return seal(
            key,
            {
                "v": 1,
                "kind": "state",
                "meter": name,
                "seq": seq,
                "ts": int(time.time()),
                "soc_bp": 9000,
                "import_wh": 0,
                "export_wh": 0,
                "power_w": 0,
                "locked_wh": 0,
                "fw": "bench",
            },
        )

    async with aiomqtt.Client("127.0.0.1", port, identifier=f"bench-{name}") as client:
        await client.subscribe(f"{PREFIX}/{name}/cmd", qos=1)

        async def report() -> None:
            await asyncio.sleep(random.random())
            while not stop.is_set():
                await client.publish(f"{PREFIX}/{name}/state", state(), qos=1)
                counters["state"] += 1
                await asyncio.sleep(1.0)

        task = asyncio.create_task(report())
        try:
            async for message in client.messages:
                cmd = parse_command(bytes(message.payload), key=key, meter=name)  # type: ignore[arg-type]
                nonlocal_seq = seq + 1
                seq = nonlocal_seq
                ack = {
                    "v": 1,
                    "kind": "ack",
                    "meter": name,
                    "seq": seq,
                    "ts": int(time.time()),
                    "cmd": cmd.seq,
                    "op": cmd.kind,
                    "trade": cmd.trade,
                    "ok": 1,
                    "reason": "ok",
                    "locked_wh": cmd.wh,
                }
                await client.publish(f"{PREFIX}/{name}/ack", seal(key, ack), qos=1)
        finally:
            task.cancel()


async def fleet(first: int, last: int, port: int) -> None:
    """Internal (``--fleet``): run meters ``first``..``last - 1`` until killed."""
    stop = asyncio.Event()
    counters = {"state": 0}

    async def keep(i: int) -> None:
        while True:  # reconnect: a loaded machine can refuse or drop a connection
            try:
                await meter(i, port, stop, counters)
            except aiomqtt.MqttError as err:
                print(f"m{i}: {err}", file=sys.stderr, flush=True)
                await asyncio.sleep(0.5 + random.random())

    tasks = []
    for i in range(first, last):
        tasks.append(asyncio.create_task(keep(i)))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)


def virtual_fleet(first: int, last: int, port: int, flash: Path) -> None:
    """Internal (``--fleet ... --virtual DIR``): the real firmware (device/ngmeter), hosted on
    CPython by hil.virtual, one meter per thread with its own paho connection, until killed."""
    from hil.virtual.meter import SimSettings, VirtualMeter

    meters = []
    for i in range(first, last):
        config = {
            "device_id": f"m{i}",
            "gateway_id": GATEWAY,
            "broker_host": "127.0.0.1",
            "broker_port": port,
            "mac_key": meter_key(i).hex(),
            "capacity_wh": 10_000,
            "report_s": 1,
            "persist_wh": 10,
        }
        sim = SimSettings(soc_bp=9000, lock_export_w=0)
        meters.append(VirtualMeter(config=config, flash=flash / f"m{i}", sim=sim).start())
    while True:
        time.sleep(1)


def observe(port: int, out: str) -> None:
    """Internal (``--observe``): record each lock command's arrival (CLOCK_MONOTONIC, which
    ``time.perf_counter`` reads on Linux, so the times compare across processes) until SIGTERM,
    then write ``{trade: time}`` to ``out``."""
    seen: dict[str, float] = {}
    ready = Path(out + ".ready")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await observe_locks(port, seen, ready)

    asyncio.run(run())
    Path(out).write_text(json.dumps(seen))


async def observe_locks(port: int, seen: dict[str, float], ready: Path) -> None:
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier="bench-observer",
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    ) as client:
        await client.subscribe(f"{PREFIX}/+/cmd", qos=1)
        ready.touch()
        async for message in client.messages:
            at = time.perf_counter()
            name = message.topic.value.split("/")[2]
            cmd = parse_command(bytes(message.payload), key=meter_key(int(name[1:])), meter=name)  # type: ignore[arg-type]
            if cmd.kind == "lock":
                seen.setdefault(cmd.trade, at)


def proc_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_ticks(pid: int) -> int:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    return 0


def peak_rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def api_ready(base: str, meters: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(
                    f"{base}/v1/status", headers={"Authorization": f"Bearer {token(0)}"}
                ) as r:
                    if r.status == 200:
                        status = await r.json()
                        if status["meters_fresh"] >= meters:
                            return
            await asyncio.sleep(0.25)
    raise RuntimeError(f"the gateway did not hear every meter in time: {status}")


async def pending_zero(base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(
                f"{base}/v1/status", headers={"Authorization": f"Bearer {token(0)}"}
            ) as r:
                if (await r.json())["pending_locks"] == 0:
                    return
            await asyncio.sleep(0.25)


async def run_mode(mode: str, args: argparse.Namespace, broker_port: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"ngrid-bench-{mode}-"))
    api_port = free_port()
    config = write_config(
        work,
        meters=args.meters,
        mqtt_port=broker_port,
        api_port=api_port,
        prove_first=mode == "event-prove-first",
        interval_s=args.interval_s,
    )
    if mode == "poll":
        cmd = [sys.executable, __file__, "--serve-polling", str(config)]
    else:
        cmd = [
            str(Path(sys.executable).with_name("ngrid")),
            "gateway",
            "run",
            "--config",
            str(config),
        ]
    log = (work / "gateway.log").open("wb")
    gateway = subprocess.Popen(cmd, stdout=log, stderr=log)
    seen_path = work / "locks.json"
    observer = subprocess.Popen(
        [sys.executable, __file__, "--observe", str(seen_path), "--port", str(broker_port)]
    )
    base = f"http://127.0.0.1:{api_port}"
    fleet_log = (work / "fleet.log").open("wb")
    meters = subprocess.Popen(
        [sys.executable, __file__, "--fleet", f"0:{args.meters}", "--port", str(broker_port)]
        + ["--fleet-nice", str(args.fleet_nice)]
        + (["--virtual", str(work / "flash")] if args.meter_kind == "virtual" else []),
        stdout=fleet_log,
        stderr=fleet_log,
    )
    try:
        while not Path(str(seen_path) + ".ready").exists():
            await asyncio.sleep(0.05)
        await api_ready(base, args.meters)

        rng = random.Random(7)
        sent: dict[str, float] = {}  # order id -> perf_counter before POST (crossing buys)
        statuses: dict[int, int] = {}
        round_trips: list[float] = []
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def post(home: int, body: dict[str, Any], crossing: bool) -> None:
                started = time.perf_counter()
                async with session.post(
                    f"{base}/v1/orders",
                    json=body,
                    headers={"Authorization": f"Bearer {token(home)}"},
                ) as r:
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                    answer = await r.json()
                round_trips.append((time.perf_counter() - started) * 1000)
                if crossing and r.status == 201:
                    sent[answer["id"]] = started

            pids = proc_tree(gateway.pid)
            cpu0 = {p: cpu_ticks(p) for p in pids}
            t0 = time.perf_counter()
            n = int(args.seconds * args.rate)
            posts = []
            for k in range(n):
                delay = t0 + k / args.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                home = rng.randrange(args.meters)
                draw = rng.random()
                if draw < args.crossing:
                    body, crossing = {"side": "buy", "wh": 10, "price": 400}, True
                elif draw < args.crossing + (1 - args.crossing) / 2:
                    body, crossing = (
                        {"side": "sell", "wh": 10, "price": rng.randint(200, 300)},
                        False,
                    )
                else:
                    body, crossing = (
                        {"side": "buy", "wh": 10, "price": rng.randint(120, 190)},
                        False,
                    )
                posts.append(asyncio.create_task(post(home, body, crossing)))
            await asyncio.gather(*posts)
            wall = time.perf_counter() - t0
            pids = proc_tree(gateway.pid)
            cpu1 = {p: cpu_ticks(p) for p in pids}
            if mode == "poll":
                await asyncio.sleep(POLL_MS / 1000 + 1)
            await pending_zero(base)
            async with session.get(
                f"{base}/v1/status", headers={"Authorization": f"Bearer {token(0)}"}
            ) as r:
                inside = (await r.json())["order_to_lock_ms"]
        main_cpu = (cpu1.get(gateway.pid, 0) - cpu0.get(gateway.pid, 0)) / CLK / wall
        tree_cpu = sum(cpu1[p] - cpu0.get(p, 0) for p in cpu1) / CLK / wall
        rss_main = peak_rss_mb(gateway.pid)
        rss_tree = sum(peak_rss_mb(p) for p in pids)
    finally:
        meters.kill()
        meters.wait()
        fleet_log.close()
        observer.send_signal(signal.SIGTERM)
        observer.wait(timeout=20)
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(timeout=20)
        except subprocess.TimeoutExpired:
            gateway.kill()
        log.close()
    seen: dict[str, float] = json.loads(seen_path.read_text())
    db = sqlite3.connect(work / "ledger.sqlite3")
    trade_buy = dict(db.execute("SELECT id, buy FROM trades"))
    db.close()
    latencies = sorted(
        (seen[t] - sent[o]) * 1000 for t, o in trade_buy.items() if t in seen and o in sent
    )
    return {
        "mode": mode,
        "orders": sum(statuses.values()),
        "accepted": statuses.get(201, 0),
        "trades": len(trade_buy),
        "measured": len(latencies),
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if latencies
        else float("nan"),
        "cpu_main": main_cpu,
        "cpu_tree": tree_cpu,
        "rss_main_mb": rss_main,
        "rss_tree_mb": rss_tree,
        "gw_p50_ms": inside["p50"] if inside["p50"] is not None else float("nan"),
        "gw_p99_ms": inside["p99"] if inside["p99"] is not None else float("nan"),
        "post_p50_ms": statistics.median(round_trips) if round_trips else float("nan"),
        "work": str(work),
    }


async def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_mosquitto(Path(tmp), extra="set_tcp_nodelay true\n") as broker,
    ):
        for mode in args.modes.split(","):
            print(f"running {mode} ...", file=sys.stderr, flush=True)
            results.append(await run_mode(mode, args, broker.port))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0, help="orders per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--crossing", type=float, default=0.1, help="share of orders that trade")
    parser.add_argument("--modes", default="event,poll,event-prove-first")
    parser.add_argument("--serve-polling", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--fleet", metavar="FIRST:LAST", help=argparse.SUPPRESS)
    parser.add_argument("--observe", metavar="OUT", help=argparse.SUPPRESS)
    parser.add_argument("--virtual", metavar="FLASH", help=argparse.SUPPRESS)
    parser.add_argument(
        "--meter-kind",
        choices=["virtual", "stand-in"],
        default="virtual",
        help="virtual: the firmware hosted by hil.virtual; stand-in: a light asyncio client",
    )
    parser.add_argument(
        "--fleet-nice",
        type=int,
        default=10,
        help="niceness of the meter fleet process (default 10: on a site the meters are boards "
        "of their own, here they share the gateway's cores; 0 = same priority)",
    )
    parser.add_argument(
        "--interval-s",
        type=int,
        default=900,
        help="delivery interval in seconds (default 900, the gateway's); short with a long "
        "--seconds to watch memory across pruned intervals",
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_polling:
        serve_polling(args.serve_polling)
        return
    if args.observe:
        observe(args.port, args.observe)
        return
    if args.fleet:
        os.nice(args.fleet_nice)
        first, last = (int(x) for x in args.fleet.split(":"))
        if args.virtual:
            virtual_fleet(first, last, args.port, Path(args.virtual))
        else:
            asyncio.run(fleet(first, last, args.port))
        return
    load_before = os.getloadavg()[0]
    results = asyncio.run(bench(args))
    print(
        f"\n{args.meters} meters ({args.meter_kind}, nice {args.fleet_nice}) at 1 Hz, "
        f"{args.rate:g} orders/s for {args.seconds:g} s, {args.crossing:.0%} crossing, "
        f"{args.interval_s} s intervals; "
        f"{os.cpu_count()} cores, load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after\n"
    )
    header = (
        f"{'mode':<19}{'orders':>7}{'trades':>7}{'locks timed':>12}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'CPU main':>9}{'CPU+prover':>11}{'RSS MB':>8}{'RSS+prover':>11}{'POST p50':>9}"
        f"{'in-gw p50':>10}{'in-gw p99':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['mode']:<19}{r['accepted']:>7}{r['trades']:>7}{r['measured']:>12}"
            f"{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['cpu_main']:>9.1%}{r['cpu_tree']:>11.1%}"
            f"{r['rss_main_mb']:>8.1f}{r['rss_tree_mb']:>11.1f}{r['post_p50_ms']:>9.1f}"
            f"{r['gw_p50_ms']:>10.1f}{r['gw_p99_ms']:>10.1f}"
        )
    by = {r["mode"]: r for r in results}
    if "event" in by and "poll" in by:
        e, p = by["event"], by["poll"]
        print(
            f"\npoll / event latency: p50 {p['p50_ms'] / e['p50_ms']:.0f}x, "
            f"p99 {p['p99_ms'] / e['p99_ms']:.0f}x"
        )
    if "event" in by:  # the default setting (locks.prove_before_lock = false)
        e = by["event"]
        for name, ok in (
            ("p99 order to lock < 20 ms", e["p99_ms"] < 20),
            ("gateway main process < 1/3 of a core", e["cpu_main"] < 1 / 3),
            ("gateway peak RSS < 150 MB (main + prover)", e["rss_tree_mb"] < 150),
        ):
            print(f"goal {name}, default mode: {'met' if ok else 'MISSED'}")
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
