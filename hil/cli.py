"""``ngrid meter``: virtual meters that run the real firmware."""

from __future__ import annotations

import click

__all__ = ["meter"]


@click.group()
def meter() -> None:
    """Run virtual meters on the real firmware (CPython-hosted or in the MicroPython VM)."""
