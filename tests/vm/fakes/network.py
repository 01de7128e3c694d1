"""A stand-in for MicroPython's ``network`` module (WLAN station), for testing device/hal.py."""

STA_IF = 0
STAT_CONNECTING = 1
STATE = {"connected": True, "connect_calls": []}


class WLAN:
    def __init__(self, interface):
        self.on = False

    def active(self, on=None):
        if on is not None:
            self.on = on
        return self.on

    def isconnected(self):
        return STATE["connected"]

    def status(self):
        return 0

    def connect(self, ssid, password):
        STATE["connect_calls"].append(ssid)
