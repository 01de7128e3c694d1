"""``ngrid simulate``: a neighbourhood end to end on real household data (issue 9: not built)."""

from __future__ import annotations

import click

from edge.errors import NgridError

__all__ = ["simulate"]


@click.command()
def simulate() -> None:
    """Simulate a neighbourhood end to end (not built yet)."""
    raise NgridError("`ngrid simulate` is not built yet (issue 9); try `ngrid market --help`")
