"""The on-board self-test run by ``ngrid provision meter`` after the firmware and its
configuration are on the board.

:func:`self_test_code` is MicroPython sent to the raw REPL; it imports the firmware just uploaded
and prints one JSON line ``{"ok": bool, "failed": [names], "checks": {name: value or error}}``:

``config``  ``ngmeter.config.load("/")`` accepts /config.json (the firmware's own validation);
``hmac``    the firmware's HMAC-SHA256 reproduces an RFC 4231 vector from the golden vectors;
``seal``    a telemetry message sealed on the board with the meter's key (the host verifies it
            with :mod:`edge.wire` and the key it recorded: board and gateway agree);
``store``   ``ngmeter.store.Store("/").load()`` reads the durable state (or starts fresh);
``fs``      at least 16 KiB free on the board's filesystem;
``memory``  at least 16 KiB free heap after ``gc.collect()``;
``mqtt``    micropython-lib's ``umqtt.simple`` (which device/hal.py uses) imports: frozen into
            the board's MicroPython image or uploaded to ``/lib`` (device/lib). The virtual
            board has no network stack (no ``usocket``) to import it with; there the check
            only finds ``/lib/umqtt/simple.py`` (or ``.mpy``);
``hal``     on an ESP32 (``machine`` present): ``hal.init``, one BMS read of the state of charge,
            the lock output switched on and off. The virtual board has no ``machine`` module;
            there this check reports ``"absent"`` and passes.

:func:`run_self_test` runs it and checks the ``seal`` result on the host.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from edge.wire.messages import WireError, parse_meter_message
from edge.wire.vectors import load_vectors
from provisioning.errors import ProvisionError, SelfTestError

__all__ = ["MIN_FREE_BYTES", "run_self_test", "self_test_code"]

MIN_FREE_BYTES = 16 * 1024

_CODE = """\
import gc, json, os, binascii
_r = {"checks": {}, "failed": []}
def _check(name, fn):
    try:
        _r["checks"][name] = fn()
    except Exception as e:
        _r["failed"].append(name)
        _r["checks"][name] = repr(e)
def _config():
    from ngmeter import config
    return config.load("/")["device_id"]
def _hmac():
    from ngmeter import wire
    key, data = binascii.unhexlify(%(key)r), binascii.unhexlify(%(data)r)
    got = binascii.hexlify(wire.hmac_sha256(key, data))
    if got.decode() != %(mac)r:
        raise ValueError("HMAC-SHA256 differs from " + %(name)r)
    return %(name)r
def _seal():
    from ngmeter import config, wire
    cfg = config.load("/")
    fields = wire.state(cfg["device_id"], 0, 0, 5000, 0, 0, 0, 0, "selftest")
    return wire.seal(cfg["key"], fields).decode()
def _store():
    from ngmeter.store import Store
    s = Store("/")
    s.load()
    return s.seq_ceil
def _fs():
    st = os.statvfs("/")
    free = st[0] * st[3]
    if free < %(min_free)d:
        raise ValueError("only %%d bytes free on flash" %% free)
    return free
def _memory():
    gc.collect()
    free = gc.mem_free()
    if free < %(min_free)d:
        raise ValueError("only %%d bytes of heap free" %% free)
    return free
def _mqtt():
    try:
        import usocket
    except ImportError:
        for path in ("/lib/umqtt/simple.py", "/lib/umqtt/simple.mpy"):
            try:
                os.stat(path)
                return path + " (no usocket here to import it with)"
            except OSError:
                pass
        raise ValueError("umqtt.simple is not on the board (neither frozen nor in /lib)")
    try:
        import umqtt.simple
    except ImportError as e:
        raise ValueError("umqtt.simple does not import (%%s)" %% e)
    umqtt.simple.MQTTClient
    return getattr(umqtt.simple, "__file__", "frozen")
def _hal():
    try:
        import machine
    except ImportError:
        return "absent"
    import hal
    from ngmeter import config
    hal.init(config.load("/"))
    soc = hal.read_soc_bp()
    hal.set_lock(True)
    hal.set_lock(False)
    return soc
for _n, _f in (("config", _config), ("hmac", _hmac), ("seal", _seal), ("store", _store),
               ("fs", _fs), ("memory", _memory), ("mqtt", _mqtt), ("hal", _hal)):
    _check(_n, _f)
_r["ok"] = not _r["failed"]
print(json.dumps(_r))
"""


def self_test_code() -> str:
    """The MicroPython source of the self-test (see the module doc), with its RFC 4231 vector
    taken from ``edge/wire/vectors.json``."""
    vector = load_vectors()["hmac_sha256"][1]
    return _CODE % {
        "key": vector["key"],
        "data": vector["data"],
        "mac": vector["mac"],
        "name": vector["name"],
        "min_free": MIN_FREE_BYTES,
    }


class _Board(Protocol):
    port: str

    def exec(self, code: str, *, timeout: float | None = None) -> str: ...


def run_self_test(board: _Board, *, meter_id: str, mac_key: bytes) -> dict[str, Any]:
    """Run the self-test on ``board`` and return its report (``checks`` by name).

    Raises :class:`SelfTestError` naming the failed checks (with the board's error for each),
    including ``seal`` when the board's MAC does not verify under ``mac_key`` on the host and
    ``config`` when the board reports another meter id.
    """
    try:
        out = board.exec(self_test_code(), timeout=60)
    except ProvisionError as err:
        raise SelfTestError(
            f"the on-board self-test could not run ({err}): re-run the command; if it fails "
            "again the board may be faulty",
            port=board.port,
        ) from err
    report: dict[str, Any] | None = None
    for line in reversed(out.strip().splitlines()):
        try:
            candidate = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(candidate, dict) and "ok" in candidate:
            report = candidate
            break
    if report is None:
        raise SelfTestError(f"the self-test printed no result: {out[-200:]!r}", port=board.port)
    failed: list[str] = list(report.get("failed", []))
    checks: dict[str, Any] = dict(report.get("checks", {}))
    if "config" not in failed and checks.get("config") != meter_id:
        failed.append("config")
        checks["config"] = f"the board says it is {checks.get('config')!r}, not {meter_id!r}"
    if "seal" not in failed:
        try:
            parse_meter_message(str(checks.get("seal", "")).encode(), key=mac_key, meter=meter_id)
        except WireError as err:
            failed.append("seal")
            checks["seal"] = f"the board's MAC does not verify with the recorded key ({err})"
    if failed:
        details = "; ".join(f"{name}: {checks.get(name)}" for name in failed)
        hint = (
            " Check the battery interface (BMS on the UART) and the lock relay wiring "
            "(docs/hil.md), then re-run."
            if "hal" in failed
            else " Re-run the command; if it fails again, add --erase with --image."
        )
        raise SelfTestError(f"the on-board self-test failed: {details}.{hint}", port=board.port)
    return checks
