"""The tests' Mosquitto: :mod:`hil.mosquitto` (shipped: the rig and the simulation use it too)."""

from hil.mosquitto import Broker, find_mosquitto, free_port, running_mosquitto

__all__ = ["Broker", "find_mosquitto", "free_port", "running_mosquitto"]
