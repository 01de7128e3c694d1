"""The run: the baseline, the trading path through every part, the coordinator's checks, the
report. See docs/simulate.md for the sequence and what each stage uses.

Time is simulated (:class:`SimClock`) and stands still between the simulation's jumps, and the
simulation decides the order in which messages reach the gateway: the meters are stepped one at
a time in the homes' order, each until the gateway has taken what it sent, and the homes' orders
are placed one after the other while no meter runs. So the same seed and inputs give the same
order log, trades and figures on every run and machine, whatever the scheduler does. The meters
and the gateway each have a view of the clock: at an interval's start the meters move first
(their reports and deliveries come in), then the gateway's timer closes the interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import secrets
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from edge.configfile import atomic_write_bytes, atomic_write_text, write_toml
from edge.errors import ConfigError, NgridError
from neighbourgrid.simulate.homes import Home
from neighbourgrid.simulate.inputs import INTERVAL_S, INTERVALS_PER_DAY, interval_index
from neighbourgrid.simulate.physics import Neighbourhood, run_baseline
from neighbourgrid.simulate.report import (
    ReportData,
    write_csvs,
    write_overview_png,
    write_report,
    write_summary,
)
from neighbourgrid.simulate.scenario import (
    MAX_HOMES,
    MIN_HOMES,
    Scenario,
    Trading,
    default_scenario,
    describe,
)

__all__ = ["EmbeddedBroker", "SimClock", "SimConfig", "SimulationError", "run"]

log = logging.getLogger("neighbourgrid.simulate")

GATEWAY_ID = "gw-sim"
BATCH_INTERVALS = 8  # a settlement batch every two simulated hours


class SimulationError(NgridError):
    """The simulation could not complete a stage it had started (message says which)."""


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """``homes`` and ``days`` from ``start`` with the home mix of ``seed``; outputs in ``out``;
    ``broker`` an MQTT URL (None: embedded broker); ``vm`` runs the firmware in the MicroPython
    VM; ``progress`` draws a progress bar on stderr. ``scenario`` (a scenario file,
    :func:`neighbourgrid.simulate.scenario.load_scenario`) gives the homes, location, weather,
    tariff and currency; None is ``default_scenario(homes, seed)``. ``seed`` also seeds the
    prices the scenario's homes do not set."""

    homes: int = 24
    days: int = 2
    seed: int = 7
    out: Path = Path("runs/sim")
    broker: str | None = None
    vm: bool = False
    start: date = date(2025, 4, 11)
    progress: bool = True
    scenario: Scenario | None = None

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the bad option."""
        count = self.homes if self.scenario is None else len(self.scenario.homes)
        if not MIN_HOMES <= count <= MAX_HOMES:
            raise ConfigError(f"must be {MIN_HOMES}..{MAX_HOMES}", key="homes")
        if not 1 <= self.days <= 14:
            raise ConfigError("must be 1..14", key="days")
        if self.broker is not None:
            _parse_broker(self.broker)
        try:
            interval_index(self.start, self.days * INTERVALS_PER_DAY)
        except ValueError as err:
            raise ConfigError(str(err), key="start") from None

    def scenario_or_default(self) -> Scenario:
        """``scenario``, or today's generated mix: ``default_scenario(homes, seed)``."""
        if self.scenario is not None:
            return self.scenario
        return default_scenario(self.homes, self.seed)


class SimClock:
    """Simulated milliseconds since the Unix epoch, moved only by :meth:`jump`.

    Callable: ``clock()`` is the current simulated time. It does not move with real time, so
    how fast this machine is changes nothing the parts decide (the simulation is reproducible).
    """

    def __init__(self, start_ms: int) -> None:
        self._now = start_ms

    def jump(self, ms: int) -> None:
        self._now = ms

    def __call__(self) -> int:
        return self._now


def _trade_number(trade_id: str) -> int:
    """The n of trade id ``t<n>`` (the engine numbers trades in the order it makes them)."""
    return int(trade_id[1:])


# ---------------------------------------------------------------------------- homes' behaviour


@dataclass(frozen=True, kw_only=True)
class Behaviour:
    """How a home trades. Sellers (a battery) have a standing sell policy unless ``manual``;
    homes without a battery have no meter and buy through their home app on the HTTP API: at the
    start of each interval it bids for the expected shortfall at ``buy_price``."""

    sell_above_bp: int | None
    sell_price: int | None
    buy_price: int | None


def behaviours(
    homes: Sequence[Home], seed: int, trading: Trading | None = None
) -> dict[str, Behaviour]:
    """Seeded prices from ``trading``'s ranges (default: sellers ask 110-170 ticks/kWh, above
    the 80 feed-in tariff, buyers bid 230-300, below the 320 grid tariff); a price a home sets
    itself (a scenario file's) replaces the draw, and every home is drawn for either way, so
    the others' prices do not depend on which homes set theirs."""
    import random

    ranges = trading or Trading()
    step = ranges.step
    rng = random.Random(seed * 7919 + 1)
    out = {}
    for home in homes:
        if home.battery is not None:
            above = rng.choice(ranges.sell_above_bp)
            price = rng.randrange(ranges.sell_price[0], ranges.sell_price[1] + 1, step)
            out[home.id] = Behaviour(
                sell_above_bp=above if home.sell_above_bp is None else home.sell_above_bp,
                sell_price=price if home.sell_price is None else home.sell_price,
                buy_price=None,
            )
        else:
            price = rng.randrange(ranges.buy_price[0], ranges.buy_price[1] + 1, step)
            out[home.id] = Behaviour(
                sell_above_bp=None,
                sell_price=None,
                buy_price=price if home.buy_price is None else home.buy_price,
            )
    return out


# ---------------------------------------------------------------------------- the run


@dataclass
class LiveResult:
    """What the trading path produced (None where a stage did not run)."""

    hood: Neighbourhood
    stages: dict[str, str]
    traded_wh: list[int]
    clearing_price: list[float | None]
    reference_price: list[int | None]
    ledger_path: Path
    totals: dict[str, int]
    statements: dict[str, dict[str, int]]
    batches: int = 0
    batches_anchored: int | None = None
    proofs_verified: int | None = None
    replay_ok: bool | None = None
    receipts_ok: int | None = None
    notes: list[str] = field(default_factory=list)
    manual_orders: int = 0
    app_orders: int = 0


def run(config: SimConfig) -> dict[str, Any]:
    """Run the simulation described by ``config``; write the outputs; return the summary.

    Raises :class:`ConfigError` for bad options and :class:`SimulationError` if a stage fails.
    """
    started, started_monotonic = datetime.now(UTC), time.monotonic()
    config.check()
    out = config.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create {out}: {err.strerror}", key="out") from None
    scenario = config.scenario_or_default()
    config = replace(config, scenario=scenario)  # the default mix is made once, not per use
    homes = list(scenario.homes)
    baseline = run_baseline(
        homes=homes,
        start=config.start,
        days=config.days,
        weather=scenario.weather,
        location=scenario.location,
    )
    live = asyncio.run(_live(config, homes))
    summary = _summary(
        config,
        homes,
        baseline,
        live,
        started=started,
        started_monotonic=started_monotonic,
    )
    live.notes.insert(
        0,
        f"How the grid saving is counted: the homes bought "
        f"{summary['grid_import_saving_wh'] / 1000:,.1f} kWh less from the grid with trading "
        f"than without; their batteries end the run holding "
        f"{summary['battery_wh_stored_less_with_trading'] / 1000:,.1f} kWh less (energy sold "
        "out of them that a home would otherwise have used later, so it counts as bought "
        f"from the grid later); net saving {summary['grid_import_saving_net_wh'] / 1000:,.1f} "
        "kWh.",
    )
    write_summary(out / "summary.json", summary)
    from edge.gateway.ledger import Ledger

    ledger = Ledger(live.ledger_path)  # the gateway has stopped: read its trades for the CSVs
    try:  # in the engine's order (t1, t2, ...), not the order they happened to settle in
        trades = sorted(ledger.trades(), key=lambda t: _trade_number(t["id"]))
    finally:
        ledger.close()
    data = ReportData(
        homes=homes,
        start=config.start,
        days=config.days,
        baseline=baseline,
        trading=live.hood,
        traded_wh=live.traded_wh,
        clearing_price=live.clearing_price,
        reference_price=live.reference_price,
        statements=live.statements,
        summary=summary,
        stages=live.stages,
        grid_price=scenario.tariff.grid_price,
        feed_in_price=scenario.tariff.feed_in_price,
        currency=scenario.currency,
        trades=trades,
        notes=live.notes,
    )
    write_csvs(out, data)
    write_report(out / "report.html", data)
    write_overview_png(out / "report.png", data)
    return summary


def _parse_broker(url: str) -> tuple[str, int, str | None, str | None]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
        raise ConfigError("expected mqtt://[user:pass@]host[:port]", key="broker")
    try:
        port = parts.port or 1883
    except ValueError:
        raise ConfigError("bad port", key="broker") from None
    return parts.hostname, port, parts.username, parts.password


def _gateway_document(
    config: SimConfig,
    homes: Sequence[Home],
    plan: dict[str, Behaviour],
    keys: dict[str, bytes],
    tokens: dict[str, str],
    *,
    directory: Path,
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    coordinator_url: str,
) -> dict[str, Any]:
    """The gateway's configuration for ``directory/gateway.toml``; writes its key beside it.
    Paths are relative to that directory (docs/gateway.md, "Paths in configuration files")."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    atomic_write_bytes(
        directory / "gateway.key",
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        mode=0o600,
    )
    mqtt: dict[str, Any] = {
        "host": host,
        "port": port,
        "topic_prefix": f"ngrid/{GATEWAY_ID}",
    }
    if username:
        mqtt["username"] = username
    if password:
        mqtt["password"] = password
    home_tables = []
    for home in homes:
        table: dict[str, Any] = {"id": home.id, "token": tokens[home.id]}
        b = plan[home.id]
        if b.sell_above_bp is not None and not home.manual:
            table["sell_above_bp"] = b.sell_above_bp
            table["sell_price"] = b.sell_price
        home_tables.append(table)
    return {
        "gateway": {
            "id": GATEWAY_ID,
            "signing_key": "gateway.key",
            "data_dir": ".",
            "log_level": "warning",
        },
        "mqtt": mqtt,
        "api": {"host": "127.0.0.1", "port": 0},
        "market": {"interval_s": INTERVAL_S},
        # The clock stands still while the meters answer (module docstring), so a lock times
        # out only if its meter never answers. Each interval's orders are placed before any
        # meter runs, so a busy seller's queue may hold many lock commands.
        # Two provers: the simulation's meters and gateway wait on them, and share a process.
        "locks": {"timeout_ms": 20_000, "queue_max": 10_000, "proof_workers": 2},
        # Telemetry is stamped at interval boundaries on the simulated clock.
        "telemetry": {"max_age_s": INTERVAL_S, "max_future_s": 5, "stale_after_s": INTERVAL_S * 2},
        # The gateway's own batch timer, on the simulated clock: a batch every two simulated
        # hours (and at max_trades, its default); the simulation seals the rest at the end.
        "batch": {"every_s": BATCH_INTERVALS * INTERVAL_S, "max_trades": 100_000},
        "coordinator": {"url": coordinator_url, "backoff_initial_s": 0.2, "backoff_max_s": 2},
        "meters": [
            {
                "id": f"m-{home.id}",
                "mac_key": keys[home.id].hex(),
                "capacity_wh": home.battery.capacity_wh,
                "reserve_bp": home.battery.reserve_bp,
                "owner": home.id,
            }
            for home in homes
            if home.battery is not None
        ],
        "homes": home_tables,
    }


def _write_config(path: Path, document: dict[str, Any]) -> Path:
    """Write a configuration document as TOML (edge.configfile: tomli-w, atomic, 0600)."""
    return write_toml(path, document, mode=0o600)


async def _until(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise SimulationError(f"timed out waiting for {what}") from None


def _start_ms(day: date) -> int:
    # Local standard time of the data sets, laid on the epoch as if it were UTC.
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


class EmbeddedBroker:
    """An amqtt broker (anonymous, loopback) in a thread with its own event loop.

    Its own thread so that the firmware's blocking MQTT calls (umqtt.simple's ``connect`` waits
    for the CONNACK) never wait on the simulation's event loop.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int) -> None:
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._broker: Any = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="broker")

    def start(self) -> None:
        from amqtt.broker import Broker

        self._thread.start()

        async def boot() -> Any:
            broker = Broker(
                {
                    "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                    "plugins": {
                        "amqtt.plugins.authentication.AnonymousAuthPlugin": {
                            "allow_anonymous": True
                        }
                    },
                }
            )
            await broker.start()
            return broker

        self._broker = asyncio.run_coroutine_threadsafe(boot(), self._loop).result(timeout=30)

    def stop(self) -> None:
        if self._broker is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


async def _live(config: SimConfig, homes: Sequence[Home]) -> LiveResult:
    for sub in ("gateway", "meters", "coordinator", "broker"):
        if (config.out / sub).exists():
            shutil.rmtree(config.out / sub)
    with _broker(config) as broker:
        async with _chain_and_coordinator(config.out) as (url, admin, _):
            return await _live_path(
                config, homes, broker=broker, coordinator_url=url, admin_token=admin
            )


@dataclass(frozen=True)
class BrokerAddress:
    """Where the run's MQTT broker listens, its login (None: anonymous) and what it is."""

    host: str
    port: int
    username: str | None
    password: str | None
    kind: str


@contextlib.contextmanager
def _broker(config: SimConfig) -> Iterator[BrokerAddress]:
    """The broker at ``--broker``; else a Mosquitto started for the run on a free loopback port
    (its files in ``out/broker``); else, where Mosquitto is not installed, amqtt in a thread."""
    from hil.mosquitto import find_mosquitto, free_port, running_mosquitto

    if config.broker is not None:
        host, port, username, password = _parse_broker(config.broker)
        yield BrokerAddress(host, port, username, password, "the broker at --broker")
        return
    if find_mosquitto()[0] is not None:
        with running_mosquitto(config.out / "broker") as mosquitto:
            yield BrokerAddress(
                mosquitto.host, mosquitto.port, None, None, "Mosquitto, started for the run"
            )
        return
    embedded = EmbeddedBroker(port=free_port())
    embedded.start()
    try:
        yield BrokerAddress(
            embedded.host, embedded.port, None, None, "amqtt in-process (no Mosquitto found)"
        )
    finally:
        embedded.stop()


async def _live_path(
    config: SimConfig,
    homes: Sequence[Home],
    *,
    broker: BrokerAddress,
    coordinator_url: str,
    admin_token: str,
) -> LiveResult:
    import aiohttp

    from edge.gateway.config import load_config
    from edge.gateway.service import GatewayService, setup_logging
    from neighbourgrid.simulate.fleet import CPythonFleet, Fleet, FleetError, VmFleet

    out = config.out
    gw_dir = out / "gateway"
    gw_dir.mkdir(parents=True)
    scenario = config.scenario_or_default()
    plan = behaviours(homes, config.seed, scenario.trading)
    keys = {h.id: secrets.token_bytes(32) for h in homes}
    tokens = {h.id: secrets.token_urlsafe(24) for h in homes}
    host, port, username, password = broker.host, broker.port, broker.username, broker.password
    doc = _gateway_document(
        config,
        homes,
        plan,
        keys,
        tokens,
        directory=gw_dir,
        host=host,
        port=port,
        username=username,
        password=password,
        coordinator_url=coordinator_url,
    )
    # The gateway runs on the file as written, read back as `ngrid gateway run` reads it.
    gw_config = load_config(_write_config(gw_dir / "gateway.toml", doc))
    stages: dict[str, str] = {
        "inputs (BDEW H0, pvlib TMY3)": "ran",
        "no-trading baseline": "ran",
    }
    hood = Neighbourhood(
        homes=homes,
        start=config.start,
        days=config.days,
        weather=scenario.weather,
        location=scenario.location,
    )
    t0 = _start_ms(config.start)
    # Two views of the simulated clock (see the module docstring): the meters' and the
    # gateway's. Both stand still between the simulation's jumps.
    meter_clock = SimClock(t0 - 3000)
    gateway_clock = SimClock(t0 - 3000)
    # The gateway's log and its libraries' go to gateway/gateway.log, as `ngrid gateway run`
    # would write them; the terminal keeps the progress bar and the result.
    log_handler = setup_logging(gw_config.log_level, path=gw_dir / "gateway.log")
    stages["broker"] = f"ran ({broker.kind})"
    service = GatewayService(
        config=gw_config, clock=gateway_clock, tick_s=0.01, handle_signals=False
    )
    gw_task = asyncio.create_task(service.run(), name="gateway")
    fleet: Fleet = (
        VmFleet(directory=out / "meters", clock=meter_clock)
        if config.vm
        else CPythonFleet(directory=out / "meters", clock=meter_clock)
    )
    meter_of: dict[str, str] = {}  # home -> its meter id, in the homes' order
    close_notes: list[str] = []
    traded_wh = [0] * hood.intervals
    clearing: list[float | None] = [None] * hood.intervals
    reference: list[int | None] = [None] * hood.intervals
    app_orders = manual_orders = 0

    def stuck(what: str) -> SimulationError:
        refused = service.status()["refusals"]
        return SimulationError(
            f"timed out waiting for {what} (gateway refusals: {refused or 'none'})"
        )

    async def step_meter(home: str, *, timeout: float, what: str) -> bool:
        """Step ``home``'s firmware once; if it published, wait until the gateway has taken
        every message it sent, so that the next meter's messages come after them. True if it
        published."""
        meter = meter_of[home]
        before = fleet.published_seq(home)
        await fleet.step_one(home)
        after = fleet.published_seq(home)
        if after == before:
            return False
        try:
            async with asyncio.timeout(timeout):
                await service.wait_meter_seq(meter, after)
        except TimeoutError:
            raise stuck(what) from None
        return True

    async def drain_commands(*, timeout: float) -> None:
        """Deliver the gateway's commands meter by meter, in the homes' order, each meter
        until it has acknowledged everything sent to it; again while a void (a refused lock)
        brings new trades; then wait for the proofs and settlements."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    again = False
                    for home, meter in meter_of.items():
                        while service.commands_outstanding(meter):
                            again = True
                            if not await step_meter(home, timeout=timeout, what="acks"):
                                await fleet.wait_readable(home, 0.05)  # a command on its way
                    if not again:
                        if service.idle:
                            return
                        await asyncio.sleep(0.002)  # proofs and settlements in hand
        except TimeoutError:
            raise stuck("locks to be acknowledged and settled") from None

    async def gateway_at(ms: int, *, until: Callable[[], bool] = lambda: True, what: str) -> None:
        """Move the gateway's clock to ``ms`` and wait until its timer has acted on it: a tick
        at ``ms``, ``until()``, a batch it sealed stored and what that lets go pruned."""
        gateway_clock.jump(ms)
        await _until(lambda: (service.ticked_at or 0) >= ms and until(), timeout=60, what=what)
        await service.quiesce()  # a batch sealed by the timer is stored
        await _until(lambda: not service.prune_waiting, timeout=60, what=what)
        await service.quiesce()  # and what it lets go is pruned

    try:
        await _until(
            lambda: (
                service.ready.is_set()
                and service.mqtt_connected.is_set()
                and service.api_port is not None
            ),
            timeout=30,
            what=f"the gateway to start and connect to the broker at {host}:{port}",
        )
        stages["gateway (policies, matching, proofs, locks, settlement, ledger)"] = "ran"
        registration = _registration(gw_config, [m.id for m in gw_config.meters])
        async with aiohttp.ClientSession() as session:
            await _register(session, coordinator_url, admin_token, registration)
        # The firmware calls gc.collect() after each message, as MicroPython needs; on CPython
        # that walks the host's whole heap (pandas, pvlib, the gateway ...), about 0.1 s each.
        # Freezing what exists now leaves those collections only the objects made later.
        gc.freeze()
        for i, home in enumerate(homes):
            if home.battery is None:
                continue
            battery = hood.batteries[home.id]
            meter_of[home.id] = f"m-{home.id}"
            await fleet.add(
                home=home.id,
                config={
                    "device_id": f"m-{home.id}",
                    "gateway_id": GATEWAY_ID,
                    "broker_host": host,
                    "broker_port": port,
                    "broker_user": username or "",
                    "broker_password": password or "",
                    "mac_key": keys[home.id].hex(),
                    "capacity_wh": home.battery.capacity_wh,
                    "reserve_bp": home.battery.reserve_bp,
                    # one report an interval, in the last second before its end (step 1 below)
                    "report_s": INTERVAL_S,
                    "watchdog_ms": 0,
                },
                soc=lambda b=battery: b.soc_bp,  # type: ignore[misc]
                seed=config.seed * 1000 + i,
            )
            # Connected and reported, one meter after the other.
            try:
                async with asyncio.timeout(30):
                    while service.telemetry_seq(meter_of[home.id]) is None:
                        await step_meter(home.id, timeout=30, what="the meters to report")
                        await asyncio.sleep(0.001)
            except TimeoutError:
                raise stuck(f"meter m-{home.id} to connect and report") from None
        stages["meters"] = f"ran ({fleet.kind})"
        api = f"http://127.0.0.1:{service.api_port}"
        progress = _progress(config, hood.intervals)
        interval_ms = INTERVAL_S * 1000
        async with aiohttp.ClientSession() as session:
            for k in range(hood.intervals + 1):
                start_k = t0 + k * interval_ms
                interval_no = start_k // interval_ms
                # 1. the last second of the previous interval: each meter in turn counts the
                #    interval's pulses (crediting exports to its locks) and reports its state
                meter_clock.jump(start_k - 1000)
                await gateway_at(start_k - 1000, what="the gateway's timer")
                for home in meter_of:
                    await step_meter(home, timeout=20, what="the gateway to take telemetry")
                # 2. the interval begins for the meters: each in turn reports its state and
                #    the deliveries of its locks that ended. Then for the gateway: it closes
                #    the interval, decides what no report decided and runs its policies.
                meter_clock.jump(start_k)
                for home in meter_of:
                    await step_meter(home, timeout=20, what="the meters' delivery reports")
                await gateway_at(
                    start_k,
                    until=lambda n=interval_no: (
                        service.interval == n  # type: ignore[misc]
                        and not any(lk.interval < n for lk in service.locks())
                    ),
                    what="the gateway's interval tick and delivery decisions",
                )
                if k == hood.intervals:
                    break
                reference[k] = service.reference_price or None
                # 3. homes without a battery bid for their shortfall through the API; manual
                #    sellers offer by hand in the evening. The meters are not stepped meanwhile.
                for home in homes:
                    b = plan[home.id]
                    if home.battery is None and b.buy_price is not None:
                        need = -hood.net_wh(home.id, k)
                        if need >= 20:
                            await _order(session, api, tokens[home.id], "buy", need, b.buy_price)
                            app_orders += 1
                    elif home.manual and home.battery is not None and b.sell_price is not None:
                        hour = (k % INTERVALS_PER_DAY) * INTERVAL_S // 3600
                        if 17 <= hour <= 21 and k % 4 == 0:
                            above = hood.batteries[home.id].soc_bp - (b.sell_above_bp or 5000)
                            wh = above * home.battery.capacity_wh // 10_000
                            if wh >= 100:
                                await _order(
                                    session, api, tokens[home.id], "sell", wh, b.sell_price
                                )
                                manual_orders += 1
                # 4. lock commands, the firmware's acks (meter by meter), proofs: until each
                #    trade is settled or voided
                await drain_commands(timeout=120)
                # 5. physics: sellers deliver what their settled trades require, shared out in
                #    trade order (each meter credits its locks in the order it took them)
                locks = sorted(
                    service.locks(interval=interval_no), key=lambda lk: _trade_number(lk.trade)
                )
                sold: dict[str, int] = {}
                for lk in locks:
                    sold[lk.seller] = sold.get(lk.seller, 0) + lk.wh
                left = {hid: hood.deliverable_wh(hid, wh) for hid, wh in sold.items()}
                received: dict[str, int] = {}
                wh_sum = price_sum = 0
                for lk in locks:
                    got = min(lk.wh, left[lk.seller])
                    left[lk.seller] -= got
                    received[lk.buyer] = received.get(lk.buyer, 0) + got
                    wh_sum += lk.wh
                    price_sum += lk.wh * lk.price
                flows = hood.step(sold=sold, received=received)
                traded_wh[k] = wh_sum
                clearing[k] = price_sum / wh_sum if wh_sum else None
                for hid in hood.batteries:
                    f = flows[hid]
                    fleet.add_energy(
                        hid,
                        import_wh=f.import_wh,
                        export_wh=f.export_wh + f.delivered_wh,
                        seconds=INTERVAL_S,
                    )
                progress.update(1)
        progress.close()
        # The rest of the run in one last batch, once what the gateway has in hand is done.
        await service.quiesce()
        await service.seal("end")
        await service.quiesce()
        ledger = service.ledger
        deadline = time.monotonic() + 120
        while await service.disk(ledger.outbox):
            if time.monotonic() > deadline:
                raise SimulationError("timed out waiting for the batches to upload")
            await asyncio.sleep(0.05)
        totals = await service.disk(ledger.totals)
        statements = {h.id: await service.disk(ledger.statement, h.id) for h in homes}
        stages["meters"] += f"; lock refusals by the firmware: {fleet.refusals()}"
    except FleetError as err:
        raise SimulationError(f"the meters failed: {err}") from None
    finally:
        try:
            await fleet.close()
        except Exception as err:  # the run's outcome stands; say what was not kept
            close_notes.append(f"the meters' flash could not be copied out: {err!r}")
        service.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(20):
                await gw_task
        log_handler.close()
    result = LiveResult(
        hood=hood,
        stages=stages,
        traded_wh=traded_wh,
        clearing_price=clearing,
        reference_price=reference,
        ledger_path=gw_config.ledger_path,
        totals=totals,
        statements=statements,
        app_orders=app_orders,
        manual_orders=manual_orders,
        notes=close_notes,
    )
    from edge.gateway.ledger import Ledger

    ledger = Ledger(gw_config.ledger_path)  # the gateway has stopped
    try:
        trade_ids = [t["id"] for t in ledger.trades()]
        last_batch = ledger.last_batch()
    finally:
        ledger.close()
    batches = last_batch.seq if last_batch is not None else 0
    async with aiohttp.ClientSession() as session:
        await _collect_coordinator(
            session,
            coordinator_url,
            gw_config.id,
            batches,
            trade_ids,
            result,
            receipts_path=out / "coordinator" / "receipts.jsonl",
        )
    # registration.json and batches/: `ngrid coordinator verify <out>` checks the run offline.
    from edge.gateway.export import export_for_verification

    export_for_verification(gw_config, out, document=registration)
    return result


async def _order(
    session: Any, api: str, token: str, side: str, wh: int, price: int
) -> dict[str, Any]:
    async with session.post(
        f"{api}/v1/orders",
        json={"side": side, "wh": wh, "price": price},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        body = await response.json()
        if response.status != 201:
            raise SimulationError(f"the gateway refused an order ({response.status}): {body}")
        return dict(body)


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(config: SimConfig, total: int) -> Any:
    if not config.progress:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, unit="interval", desc="simulating", leave=True)


# ---------------------------------------------------------------------------- coordinator


ADMIN_TOKEN_BYTES = 24


@contextlib.asynccontextmanager
async def _chain_and_coordinator(out: Path) -> AsyncIterator[tuple[str, str, str]]:
    """The local Soroban RPC stand-in with the anchor contract deployed, and the coordinator
    service (verification, store, anchoring) in front of it: yields (coordinator URL, admin
    token, contract id). Files go to ``out/coordinator`` (config, key, store, chain)."""
    from stellar_sdk import Keypair

    from coordinator.config import load_config as load_coordinator_config
    from coordinator.service import running
    from coordinator.soroban import (
        LOCAL_PASSPHRASE,
        SorobanConfig,
        SqliteEnvelopeStore,
        Submitter,
        deploy_anchor_contract,
        local_soroban,
    )

    directory = out / "coordinator"
    directory.mkdir(parents=True, exist_ok=True)
    keypair = Keypair.random()
    admin = secrets.token_urlsafe(ADMIN_TOKEN_BYTES)
    for name, text in (("coordinator.secret", keypair.secret), ("admin.token", admin)):
        atomic_write_text(directory / name, text, mode=0o600)
    async with local_soroban(
        ledger_close_ms=50, passphrase=LOCAL_PASSPHRASE, state_path=directory / "chain.json"
    ) as rpc:
        await rpc.fund(keypair.public_key)
        deploy = SorobanConfig(rpc_url=rpc.url, network_passphrase=LOCAL_PASSPHRASE, contract_id="")
        async with Submitter(
            config=deploy,
            store=SqliteEnvelopeStore(path=":memory:"),
            keypair=keypair,
            poll_interval_s=0.02,
        ) as submitter:
            contract_id = await deploy_anchor_contract(submitter=submitter)
        document = _coordinator_document(rpc_url=rpc.url, contract_id=contract_id)
        # The coordinator runs on the file as written, read back as `serve --config` reads it.
        config = load_coordinator_config(_write_config(directory / "coordinator.toml", document))
        async with running(config) as (_, url):
            yield url, admin, contract_id


def _coordinator_document(*, rpc_url: str, contract_id: str) -> dict[str, Any]:
    """The coordinator's configuration for ``coordinator/coordinator.toml``: its files
    (admin token, secret key, store) are named relative to that directory."""
    from coordinator.soroban import LOCAL_PASSPHRASE

    return {
        "http": {"host": "127.0.0.1", "port": 0, "admin_token_file": "admin.token"},
        "store": {"path": "coordinator.sqlite3"},
        "soroban": {
            "rpc_url": rpc_url,
            "network_passphrase": LOCAL_PASSPHRASE,
            "contract_id": contract_id,
            "secret_file": "coordinator.secret",
            "poll_interval_s": 0.02,
            "retry_max_s": 0.5,
        },
        "market": {"interval_s": INTERVAL_S},
    }


def _registration(gw_config: Any, meters: Sequence[str]) -> dict[str, Any]:
    """The gateway's self-signed registration (edge.gateway.registration, the builder
    ``ngrid provision gateway`` uses too)."""
    from edge.gateway.registration import registration
    from edge.gateway.service import load_signing_key

    return registration(
        load_signing_key(gw_config.signing_key), gateway_id=gw_config.id, meters=meters
    )


async def _register(session: Any, url: str, admin: str, document: dict[str, Any]) -> None:
    async with session.post(
        url + "/gateways", json=document, headers={"Authorization": f"Bearer {admin}"}
    ) as response:
        if response.status not in (200, 201):
            raise SimulationError(
                f"the coordinator refused the gateway's registration: {await response.text()}"
            )


async def _collect_coordinator(
    session: Any,
    url: str,
    gateway: str,
    batches: int,
    trade_ids: Sequence[str],
    result: LiveResult,
    *,
    receipts_path: Path,
) -> None:
    """Wait until the coordinator has verified and anchored every batch, then read back its
    findings and every trade's receipt, checking each receipt's Merkle path and that the
    anchored hash chain is the one the batches give."""
    from coordinator.soroban import expected_chain
    from edge.batch import TradeRecord, verify_inclusion
    from edge.batch import trade_leaf as leaf_of

    rows: list[dict[str, Any]] = []
    for seq in range(1, batches + 1):
        deadline = time.monotonic() + 120
        while True:
            async with session.get(f"{url}/batches/{gateway}/{seq}") as response:
                body = await response.json() if response.status == 200 else {}
            anchor = body.get("anchor") or {}
            if body.get("status") == "refused" or anchor.get("status") in ("anchored", "refused"):
                break
            if time.monotonic() > deadline:
                raise SimulationError(f"the coordinator did not finish batch {seq}: {body}")
            await asyncio.sleep(0.05)
        rows.append(body)
    proofs = anchored = 0
    replay_ok = bool(rows)
    chain = bytes(32)
    failures: list[str] = []
    for body in rows:
        findings = body.get("findings") or []
        failed = [f for f in findings if f.get("status") == "fail"]
        failures += [f"batch {body['seq']}: {f['check']}: {f.get('detail', '')}" for f in failed]
        if body.get("status") != "accepted":
            replay_ok = False
            continue
        checks = {f.get("check") for f in findings if f.get("status") == "pass"}
        if "replay" not in checks or any(f["check"].startswith("replay") for f in failed):
            replay_ok = False
        bad_proofs = sum(1 for f in failed if f["check"] == "proof")
        proofs += body["trades"] - bad_proofs if body["trades"] and "proof" in checks else 0
        anchor = body.get("anchor") or {}
        chain = expected_chain(chain, bytes.fromhex(body["hash"]), body["seq"], body["trades"])
        if anchor.get("status") == "anchored" and anchor.get("chain") == chain.hex():
            anchored += 1
    receipts_ok = 0
    receipts = []
    for trade in trade_ids:
        async with session.get(f"{url}/receipts/{gateway}/{trade}") as response:
            if response.status != 200:
                continue
            receipt = await response.json()
        receipts.append(json.dumps(receipt, sort_keys=True))
        record = TradeRecord.from_json(receipt["trade"])
        included = verify_inclusion(
            leaf=leaf_of(record),
            index=receipt["index"],
            size=receipt["size"],
            proof=[bytes.fromhex(p) for p in receipt["path"]],
            root=bytes.fromhex(receipt["merkle_root"]),
        )
        if (
            included
            and receipt["header"]["merkle_root"] == receipt["merkle_root"]
            and (receipt.get("anchor") or {}).get("status") == "anchored"
        ):
            receipts_ok += 1
    receipts_path.write_text("".join(line + "\n" for line in receipts))
    result.batches = len(rows)
    result.batches_anchored = anchored
    result.proofs_verified = proofs
    result.replay_ok = replay_ok
    result.receipts_ok = receipts_ok
    result.notes += failures[:20]
    result.stages["coordinator (verification with replay, store)"] = "ran"
    result.stages["Soroban anchoring (local RPC stand-in)"] = "ran"
    result.stages["receipts (Merkle inclusion, from the coordinator)"] = "ran"


# ---------------------------------------------------------------------------- summary


def _tick(config: SimConfig) -> str:
    """What a tick is worth, for summary.json's units: ``0.001 EUR``."""
    currency = config.scenario_or_default().currency
    return f"{currency.tick_value} {currency.code}"


SAVING_RULE = (
    "grid_import_saving_net_wh = (grid import without trading - grid import with trading) - "
    "(energy the batteries hold at the end without trading - with trading). Energy sold out of "
    "a battery that the baseline still holds at the end is counted as energy the home would buy "
    "from the grid later, Wh for Wh (a stored Wh gives back about 0.95 Wh, so this slightly "
    "understates the saving)."
)


def _summary(
    config: SimConfig,
    homes: Sequence[Home],
    baseline: Neighbourhood,
    live: LiveResult,
    *,
    started: datetime,
    started_monotonic: float,
) -> dict[str, Any]:
    def total(h: Neighbourhood, name: str) -> int:
        return sum(getattr(f, name) for flows in h.history.values() for f in flows)

    load = total(baseline, "load_wh")
    imp_with = total(live.hood, "import_wh")
    imp_without = total(baseline, "import_wh")
    t = live.totals
    avg_price = round(t["value"] / t["wh"], 1) if t["wh"] else None
    stored_with = sum(b.stored_wh for b in live.hood.batteries.values())
    stored_without = sum(b.stored_wh for b in baseline.batteries.values())
    saving = imp_without - imp_with
    stored_less = stored_without - stored_with
    scenario = describe(config.scenario_or_default())
    scenario_file = scenario["scenario"].pop("path")
    return {
        "homes": len(homes),
        "days": config.days,
        "seed": config.seed,
        "start": config.start.isoformat(),
        **scenario,
        "trades": t["trades"],
        "wh_traded": t["wh"],
        "wh_delivered": t["wh_delivered"],
        "defaults": t["defaults"],
        "avg_price": avg_price,
        "tokens_burned": t["token_burns"],
        "carbon_mg": t["carbon_mg"],
        "lp_commission": t["commission"],
        "batches": live.batches,
        "batches_anchored": live.batches_anchored,
        "proofs_verified": live.proofs_verified,
        "replay_ok": live.replay_ok,
        "receipts_verified": live.receipts_ok,
        "self_sufficiency_pct": round(100 * (load - imp_with) / load, 1) if load else None,
        "grid_import_wh_with_trading": imp_with,
        "grid_import_wh_without_trading": imp_without,
        # The headline saving, net of what trading took out of the batteries (SAVING_RULE).
        "grid_import_saving_wh": saving,
        "battery_wh_stored_less_with_trading": stored_less,
        "grid_import_saving_net_wh": saving - stored_less,
        "saving_rule": SAVING_RULE,
        "load_wh": load,
        "pv_wh": total(baseline, "pv_wh"),
        "export_wh_with_trading": total(live.hood, "export_wh"),
        "export_wh_without_trading": total(baseline, "export_wh"),
        "battery_wh_end_with_trading": stored_with,
        "battery_wh_end_without_trading": stored_without,
        "app_orders": live.app_orders,
        "manual_orders": live.manual_orders,
        "units": {
            "energy": "Wh",
            "avg_price": f"ticks per kWh (1 tick = {_tick(config)})",
            "lp_commission": "microticks",
            "carbon_mg": "mg CO2",
        },
        "stages": dict(live.stages),
        # What names this run's time and place, kept apart: everything above is the same for
        # the same options and inputs on every run and machine.
        "run": {
            "out": str(config.out),
            "scenario_file": scenario_file,
            "started_utc": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "wall_s": round(time.monotonic() - started_monotonic, 1),
        },
    }
