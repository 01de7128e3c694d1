"""``ngrid meter``: virtual meters that run the real firmware, and the virtual board."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

__all__ = ["meter"]


@click.group()
def meter() -> None:
    """Run virtual meters on the real firmware (CPython-hosted or in the MicroPython VM)."""


@meter.command()
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Host directory that holds the board's files (default: a temporary one).",
)
def board(root: Path | None) -> None:
    """Start a virtual board: the MicroPython VM's REPL on a pseudo-terminal.

    Prints the /dev/pts path on the first line; use it with mpremote
    (`mpremote connect /dev/pts/N exec ...`, `fs cp`, `fs ls`). Runs until Ctrl-C or SIGTERM.
    """
    from hil.virtual.board import VirtualBoard

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with VirtualBoard(root=root) as vboard:
        click.echo(vboard.port)
        click.echo(f"files: {vboard.files}", err=True)
        try:
            while not stop.wait(0.5):
                if not vboard.running:
                    raise click.ClickException("the virtual board's VM exited")
        except KeyboardInterrupt:
            pass
