"""The meter's configuration: a JSON file on flash written by the installer (ngrid provision).

``parse(text)`` returns a dict with every key filled in (defaults below) and ``key`` (the MAC key
as 32 bytes) added; a missing or bad setting raises ConfigError naming the key. Pure: runs on
MicroPython and CPython.
"""

import json

CONFIG_FILE = "config.json"

# name -> (type, default); a default of None marks a required key.
SCHEMA = {
    "device_id": (str, None),
    "gateway_id": (str, None),
    "broker_host": (str, None),
    "broker_port": (int, 1883),
    "broker_user": (str, ""),
    "broker_password": (str, ""),
    "mac_key": (str, None),  # 64 hex digits = 32 bytes
    "capacity_wh": (int, None),
    "reserve_bp": (int, 2000),  # 20 %
    "report_s": (int, 10),  # telemetry period
    "keepalive_s": (int, 60),
    "persist_wh": (int, 10),  # counter change that forces a flash write
    "persist_s": (int, 300),  # longest a changed counter waits for a flash write
    "backoff_base_ms": (int, 500),
    "backoff_cap_ms": (int, 60000),
    "watchdog_ms": (int, 30000),
    "wifi_ssid": (str, ""),
    "wifi_password": (str, ""),
    "hal": (dict, {}),  # hardware settings (pins, UART), read by hal.init only
}

_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-"
_HEX = "0123456789abcdefABCDEF"


class ConfigError(ValueError):
    """A missing or bad setting; ``key`` names it (None when the file itself is the problem)."""

    def __init__(self, message, key=None):
        super().__init__((key + ": " + message) if key else message)
        self.key = key


def _is_id(value):
    if not value or len(value) > 64:
        return False
    for ch in value:
        if ch not in _ID_CHARS:
            return False
    return True


def parse(text):
    """Validate the config JSON ``text``; return the complete config dict (see SCHEMA)."""
    try:
        raw = json.loads(text)
    except ValueError:
        raise ConfigError("config file is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ConfigError("config file must hold a JSON object")
    for name in raw:
        if name not in SCHEMA:
            raise ConfigError("unknown setting", name)
    cfg = {}
    for name in SCHEMA:
        kind, default = SCHEMA[name]
        if name not in raw:
            if default is None:
                raise ConfigError("missing (required)", name)
            cfg[name] = default
            continue
        value = raw[name]
        if type(value) is not kind:
            raise ConfigError("must be " + kind.__name__, name)
        cfg[name] = value
    for name in ("device_id", "gateway_id"):
        if not _is_id(cfg[name]):
            raise ConfigError("must be 1-64 characters from A-Z a-z 0-9 _ . : -", name)
    key = cfg["mac_key"]
    if len(key) != 64 or any(ch not in _HEX for ch in key):
        raise ConfigError("must be 64 hex digits (a 32-byte key)", "mac_key")
    cfg["key"] = bytes(int(key[i : i + 2], 16) for i in range(0, 64, 2))
    _range(cfg, "broker_port", 1, 65535)
    _range(cfg, "capacity_wh", 1, 10**9)
    _range(cfg, "reserve_bp", 0, 10000)
    _range(cfg, "report_s", 1, 86400)
    _range(cfg, "keepalive_s", 5, 3600)
    _range(cfg, "persist_wh", 1, 10**6)
    _range(cfg, "persist_s", 1, 86400)
    _range(cfg, "backoff_base_ms", 10, 600000)
    _range(cfg, "backoff_cap_ms", cfg["backoff_base_ms"], 3600000)
    _range(cfg, "watchdog_ms", 0, 3600000)
    return cfg


def _range(cfg, name, low, high):
    if not low <= cfg[name] <= high:
        raise ConfigError("must be between %d and %d" % (low, high), name)


def load(root):
    """Read and validate ``<root>/config.json``; ConfigError if it is missing or bad."""
    path = root.rstrip("/") + "/" + CONFIG_FILE
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("no config file at " + path + " (provision the meter first)") from None
    return parse(text)
