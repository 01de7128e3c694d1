"""``ngrid coordinator``: verify gateways' settlement batches and anchor them on Soroban."""

from __future__ import annotations

import click

__all__ = ["coordinator"]


@click.group()
def coordinator() -> None:
    """Verify signed settlement batches from gateways and anchor them on Soroban."""
