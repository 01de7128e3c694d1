"""``ngrid provision``: the installer's commands for meters and gateways."""

from __future__ import annotations

import click

__all__ = ["provision"]


@click.group()
def provision() -> None:
    """Flash and register meters, set up gateways (esptool, mpremote)."""
