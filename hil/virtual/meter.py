"""Virtual meters: the real firmware (device/ngmeter) against a real MQTT broker.

Two ways to run the same firmware files with the simulated hal of :mod:`hil.virtual.simhal`
(battery, PV, load, lock output; driven by a simple model or a trace):

- hosted on CPython (default, cheap enough for fleets): the firmware's ``Runner`` runs in a
  thread, its MQTT client is :class:`hil.virtual.mqttclient.PahoClient` (umqtt.simple's API
  over paho-mqtt, the same adapter the simulation's meters use);
- in the MicroPython VM (``vm=True``): Node runs the WebAssembly VM (``js/vm_meter.mjs``), the
  firmware's client is ``simhal.BridgeClient`` and this process holds the real connection,
  relaying a JSON line protocol (:class:`_Relay`).

The meter's flash is a host directory: ``config.json`` (the same file a provisioned board has)
and ``state.json`` (seq block, counters, locks), so a restart continues where it stopped.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import queue
import random
import subprocess
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt

from edge.errors import ConfigError, NgridError
from hil.virtual import simhal
from hil.virtual.firmware import REPO_ROOT, import_firmware
from hil.virtual.mqttclient import PahoClient
from hil.virtual.vm import JS_DIR, VmError, flash_files, node_path, vm_available

__all__ = [
    "SimSettings",
    "VirtualMeter",
    "load_meter_config",
    "load_trace",
    "parse_broker_url",
]


@dataclass(frozen=True, kw_only=True)
class SimSettings:
    """The simulated home: initial SoC (bp), constant PV and load (W) unless ``trace`` is given
    (rows of t_s, pv_w, load_w, repeating), battery power limit (W), and the export power (W)
    the battery adds while the lock output is on."""

    soc_bp: int = 5000
    pv_w: int = 0
    load_w: int = 0
    max_w: int = 5000
    lock_export_w: int = 2000
    trace: tuple[tuple[int, int, int], ...] | None = None


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtt://host:port`` -> (host, port); ConfigError for anything else."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "mqtt" or not parsed.hostname:
        raise ConfigError(f"want mqtt://host:port, got {url!r}", key="broker")
    try:
        port = parsed.port or 1883
    except ValueError as err:
        raise ConfigError(f"bad port in {url!r}", key="broker") from err
    return parsed.hostname, port


def load_meter_config(path: Path, *, broker: str | None = None) -> dict[str, Any]:
    """Read a meter's config.json (the firmware's format, docs in device/ngmeter/config.py),
    optionally pointing it at ``broker``; validated by the firmware's own parser.

    Raises ConfigError naming the key for a missing file or a bad setting.
    """
    try:
        raw = json.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}", key="config") from err
    except ValueError as err:
        raise ConfigError(f"{path} is not valid JSON: {err}", key="config") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object", key="config")
    if broker is not None:
        raw["broker_host"], raw["broker_port"] = parse_broker_url(broker)
    check_config(raw)
    return raw


def check_config(raw: Mapping[str, Any]) -> None:
    """Validate with the firmware's parser; its ConfigError becomes ours (same key)."""
    fw_config = import_firmware("ngmeter.config")
    try:
        fw_config.parse(json.dumps(dict(raw)))
    except fw_config.ConfigError as err:
        raise ConfigError(str(err).removeprefix(f"{err.key}: "), key=err.key) from None


def load_trace(path: Path) -> tuple[tuple[int, int, int], ...]:
    """A CSV with header ``t_s,pv_w,load_w`` (integers, t_s increasing) -> rows."""
    rows: list[tuple[int, int, int]] = []
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"t_s", "pv_w", "load_w"} <= set(reader.fieldnames):
                raise ConfigError(f"{path}: header must be t_s,pv_w,load_w", key="trace")
            for n, row in enumerate(reader, start=2):
                try:
                    rows.append((int(row["t_s"]), int(row["pv_w"]), int(row["load_w"])))
                except (TypeError, ValueError) as err:
                    raise ConfigError(f"{path} line {n}: want integers", key="trace") from err
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}", key="trace") from err
    if not rows or any(b[0] <= a[0] for a, b in itertools.pairwise(rows)):
        raise ConfigError(f"{path}: needs rows with increasing t_s", key="trace")
    return tuple(rows)


def _battery(config: Mapping[str, Any], sim: SimSettings) -> simhal.SimBattery:
    battery = simhal.SimBattery(
        int(config["capacity_wh"]),
        sim.soc_bp,
        sim.pv_w,
        sim.load_w,
        max_w=sim.max_w,
        lock_export_w=sim.lock_export_w,
    )
    if sim.trace is not None:
        battery.trace = simhal.Trace(list(sim.trace))
    return battery


class VirtualMeter:
    """One meter running the real firmware; start()/stop() or use as a context manager.

    ``config``: the meter's config.json content (validated; ConfigError names a bad key);
    ``flash``: the host directory that is its flash (created; reused state continues);
    ``vm``: run in the MicroPython VM instead of CPython; ``seed``: reconnect jitter seed;
    ``clock``: simulated time for CPython-hosted meters (``simhal.ScaledClock(60, t0)`` runs
    an hour a minute; the battery model, telemetry period, lock intervals and command expiry
    all follow it). Default: the host's clock.
    """

    def __init__(
        self,
        *,
        config: Mapping[str, Any],
        flash: Path,
        sim: SimSettings | None = None,
        vm: bool = False,
        seed: int | None = None,
        clock: simhal.WallClock | simhal.ScaledClock | None = None,
    ) -> None:
        check_config(config)
        self.config = dict(config)
        self.flash = flash
        self.sim = sim or SimSettings()
        self.vm = vm
        self.seed = seed if seed is not None else random.randrange(1, 2**31)
        if clock is not None and vm:
            raise ValueError("a custom clock is for CPython-hosted meters (the VM uses its own)")
        self.clock = clock or simhal.WallClock()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._relay: _Relay | None = None
        self.runner: Any = None  # the firmware's Runner (CPython mode)
        self.hal: simhal.SimHal | None = None

    @property
    def meter_id(self) -> str:
        return str(self.config["device_id"])

    def start(self) -> Self:
        self.flash.mkdir(parents=True, exist_ok=True)
        (self.flash / "config.json").write_text(json.dumps(self.config))
        if self.vm:
            self._start_vm()
        else:
            self._start_hosted()
        return self

    # -- CPython-hosted ----------------------------------------------------------------------

    def _start_hosted(self) -> None:
        runner_mod = import_firmware("ngmeter.runner")
        battery = _battery(self.config, self.sim)
        self.hal = simhal.SimHal(self.clock, battery, PahoClient, seed=self.seed)
        # This host wakes on network input (PahoClient.wait), so it need not poll every 50 ms.
        self.runner = runner_mod.Runner(self.hal, str(self.flash), slice_ms=1000)
        self._thread = threading.Thread(
            target=self._run_hosted, name=f"meter-{self.meter_id}", daemon=True
        )
        self._thread.start()

    def _run_hosted(self) -> None:
        runner = self.runner
        try:
            factor = self.clock.factor
            while not self._stop.is_set():
                ms = runner.step()  # in simulated ms
                client = runner.client
                if isinstance(client, PahoClient) and ms > 0:
                    with contextlib.suppress(OSError):  # the next step sees it and reconnects
                        client.wait(ms / 1000 / factor)
                elif ms > 0:
                    self._stop.wait(ms / 1000 / factor)
        except Exception as err:  # the firmware crashed: keep the reason for the caller
            self.error = repr(err)
            raise
        finally:
            client = runner.client
            if isinstance(client, PahoClient):
                client.close()  # like a power cut: the broker publishes the will

    # -- in the MicroPython VM ---------------------------------------------------------------

    def _start_vm(self) -> None:
        node = node_path()
        if node is None or not vm_available():
            raise VmError("the MicroPython VM is not installed: run `npm ci` in the repository")
        files = flash_files()
        for name in ("config.json", "state.json"):
            if (self.flash / name).exists():
                files[f"/flash/{name}"] = (self.flash / name).read_text()
        sim = self.sim
        setup = (
            "import sys\n"
            "sys.path.insert(0, '/flash')\n"
            "import simhal, ngbridge\n"
            "from ngmeter.runner import Runner\n"
            f"_bat = simhal.SimBattery({int(self.config['capacity_wh'])}, {sim.soc_bp}, "
            f"{sim.pv_w}, {sim.load_w}, max_w={sim.max_w}, lock_export_w={sim.lock_export_w})\n"
        )
        if sim.trace is not None:
            setup += f"_bat.trace = simhal.Trace({[list(r) for r in sim.trace]!r})\n"
        setup += (
            "def _client(*args):\n"
            "    return simhal.BridgeClient(ngbridge.send, ngbridge.poll, *args)\n"
            f"_hal = simhal.SimHal(simhal.WallClock(), _bat, _client, seed={self.seed})\n"
            "_runner = Runner(_hal, '/flash')\n"
        )
        self._proc = subprocess.Popen(
            [node, str(JS_DIR / "vm_meter.mjs")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO_ROOT,
            bufsize=1,
        )
        assert self._proc.stdin is not None
        self._proc.stdin.write(
            json.dumps({"files": files, "setup": setup, "flash": str(self.flash)}) + "\n"
        )
        self._proc.stdin.flush()
        self._relay = _Relay(self._proc, self)
        self._thread = threading.Thread(
            target=self._relay.run, name=f"vm-meter-{self.meter_id}", daemon=True
        )
        self._thread.start()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop the meter like a power cut (the broker then publishes its "offline" will);
        its flash keeps its state."""
        self._stop.set()
        if self._proc is not None and self._proc.stdin is not None:
            try:
                self._proc.stdin.write('{"ev": "stop"}\n')
                self._proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._relay is not None:
            self._relay.close()
        if self._proc is not None:
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Relay:
    """The host end of simhal.BridgeClient: JSON lines from the VM become paho calls on a real
    connection, broker events become lines to the VM."""

    def __init__(self, proc: subprocess.Popen[str], owner: VirtualMeter) -> None:
        self.proc = proc
        self.owner = owner
        self.client: mqtt.Client | None = None
        self.events: queue.Queue[str] = queue.Queue()
        self.lock = threading.Lock()

    def _send(self, event: dict[str, Any]) -> None:
        with self.lock:
            if self.proc.stdin is None or self.proc.poll() is not None:
                return
            try:
                self.proc.stdin.write(json.dumps(event) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass

    def _lost(self, error: str) -> None:
        self._send({"ev": "lost", "error": error})

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                op = json.loads(line)
            except ValueError:
                continue
            kind = op.get("op")
            if kind == "crash":
                self.owner.error = op.get("error")
                break
            if kind == "connect":
                self._connect(op)
            elif kind == "close":
                self.close()
            elif self.client is not None and kind == "subscribe":
                self.client.subscribe(op["topic"], op["qos"])
            elif self.client is not None and kind == "publish":
                self.client.publish(
                    op["topic"], op["payload"].encode(), qos=op["qos"], retain=op["retain"]
                )
        self.close()

    def _connect(self, op: dict[str, Any]) -> None:
        self.close()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=op["client_id"], clean_session=True
        )
        if op.get("user"):
            client.username_pw_set(op["user"], op.get("password") or None)
        if op.get("will"):
            topic, payload, retain, qos = op["will"]
            client.will_set(topic, payload.encode(), qos=qos, retain=retain)

        def on_connect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
            if rc.is_failure:
                self._lost(f"connection refused ({rc})")
            else:
                self._send({"ev": "connected"})

        def on_disconnect(c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
            self._lost(f"disconnected ({rc})")

        def on_message(c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
            self._send(
                {"ev": "message", "topic": msg.topic, "payload": msg.payload.decode("latin-1")}
            )

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        try:
            client.connect(op["host"], op["port"], op["keepalive"])
        except OSError as err:
            self._lost(str(err))
            return
        client.loop_start()
        self.client = client

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.on_disconnect = None
            sock = client.socket()
            if sock is not None:
                sock.close()
            client.loop_stop()


def run_meter(meter: VirtualMeter, *, stop: threading.Event, on_start: Callable[[], None]) -> None:
    """Run ``meter`` until ``stop`` is set or it fails (NgridError with the firmware's error)."""
    with meter:
        on_start()
        while not stop.wait(0.5):
            if not meter.running:
                raise NgridError(f"virtual meter {meter.meter_id} stopped: {meter.error}")
