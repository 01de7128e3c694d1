"""Command-line shells of the gateway's parts: ``ngrid market`` and ``ngrid gateway``.

Thin click wrappers: each command parses its options, calls a typed function of the core or the
service, and lets :class:`edge.errors.NgridError` propagate to :func:`neighbourgrid.cli.main`.
"""

from __future__ import annotations

import click

__all__ = ["gateway", "market"]


@click.group()
def market() -> None:
    """The matching engine: a deterministic continuous double auction."""


@click.group()
def gateway() -> None:
    """The neighbourhood gateway service."""
