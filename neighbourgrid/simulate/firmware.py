"""The homes' meters: the real firmware (device/ngmeter), hosted on CPython by the simulation.

Each battery home runs ``ngmeter.runner.Runner`` -- the very modules that run on the ESP32,
imported from device/ by :func:`hil.virtual.firmware.import_firmware` -- on the virtual
hardware of :mod:`hil.virtual`, as the virtual meter does:

- the hal is :class:`hil.virtual.simhal.SimHal` (clock, ticks, pulse counting, lock output,
  the hal functions device/hal.py provides on a board) over a :class:`hil.virtual.simhal.
  HostClock` reading the simulated clock and, in place of the virtual meter's simple battery,
  :class:`PhysicsSensors`: the simulation's physics (:mod:`neighbourgrid.simulate.physics`).
  ``read_soc_bp`` is the home battery's state of charge, ``take_pulses`` the import and export
  energy (Wh) the physics produced since the last call. The lock output (``set_lock``) is
  recorded; the energy a sale moves is decided by the physics from the settled trades, and the
  firmware measures it through its export pulses.
- the MQTT client is :class:`hil.virtual.mqttclient.PahoClient` (umqtt.simple's API over
  paho-mqtt) with ``wait_puback=False``: umqtt.simple's receive rules (one message per
  ``check_msg``, messages handed over during a QoS 1 publish, each PUBACKed after the callback
  returns), but a QoS 1 publish does not wait for the broker's PUBACK, so stepping a fleet in
  the simulation's event loop is never blocked on the broker.

The firmware is stepped by the simulation (``Runner.step()``), as the MicroPython VM host and
the CPython virtual meter do; nothing here is a stand-in for the firmware's logic.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hil.virtual.firmware import import_firmware
from hil.virtual.mqttclient import PahoClient
from hil.virtual.simhal import HostClock, SimHal

__all__ = ["FirmwareMeter", "PhysicsSensors"]


class PhysicsSensors:
    """The meter's sensors over the simulation's physics, in the shape SimHal reads
    (hil.virtual.simhal's battery interface).

    ``soc()`` returns the home battery's state of charge (basis points). :meth:`add_energy`
    queues an interval's import/export Wh for the firmware's next ``take_pulses`` and sets the
    power reading (W, import positive) to the interval's mean. ``lock`` is the lock output the
    firmware sets (recorded, not modelled).
    """

    def __init__(self, *, soc: Callable[[], int]) -> None:
        self._soc = soc
        self.import_wh = 0
        self.export_wh = 0
        self.power_w = 0
        self.lock = False

    def add_energy(self, *, import_wh: int, export_wh: int, seconds: int) -> None:
        self.import_wh += import_wh
        self.export_wh += export_wh
        self.power_w = (import_wh - export_wh) * 3600 // seconds

    def soc_bp(self) -> int:
        return self._soc()

    def advance(self, ms: int) -> None:
        """Nothing to do: the physics runs per interval in the simulation (add_energy)."""


class FirmwareMeter:
    """One home's meter: its flash directory (config.json, state.json), hal and Runner.

    ``config`` is the meter's config.json content (the installer's format, device/ngmeter/
    config.py); ``soc`` the battery's SoC in bp; ``clock`` the simulated time in ms since the
    epoch; ``seed`` the reconnect jitter's seed. Raises the firmware's ConfigError for a bad
    config.
    """

    def __init__(
        self,
        *,
        directory: Path,
        config: dict[str, Any],
        soc: Callable[[], int],
        clock: Callable[[], int],
        seed: int,
    ) -> None:
        fw_config = import_firmware("ngmeter.config")
        runner_mod = import_firmware("ngmeter.runner")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(config, indent=1))
        self.id = config["device_id"]
        self.directory = directory
        self.sensors = PhysicsSensors(soc=soc)
        self.hal = SimHal(
            HostClock(clock),
            self.sensors,
            functools.partial(PahoClient, wait_puback=False, nodelay=True),
            seed=seed,
        )
        cfg = fw_config.parse((directory / "config.json").read_text())
        self.runner = runner_mod.Runner(self.hal, str(directory), cfg)

    def add_energy(self, *, import_wh: int, export_wh: int, seconds: int) -> None:
        """An interval's energy from the physics, for the firmware's pulse counters."""
        self.sensors.add_energy(import_wh=import_wh, export_wh=export_wh, seconds=seconds)

    def _pending(self) -> int:
        client = self.runner.client
        if client is None:
            return 0
        try:
            return int(client.pending())
        except OSError:
            return 1  # the next step sees the failure and drops the connection

    def step(self) -> None:
        """Run the firmware until it has handled every message received so far."""
        for _ in range(64):
            self.runner.step()
            if self._pending() == 0:
                return

    @property
    def connected(self) -> bool:
        return self.runner.client is not None

    def close(self) -> None:
        client = self.runner.client
        if client is not None:
            client.disconnect()
