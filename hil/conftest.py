"""Registers the HIL rig's pytest plugin, so `pytest hil` finds its options and fixtures."""

pytest_plugins = ["hil.plugin"]
