"""``ngrid meter``: virtual meters that run the real firmware, and the virtual board."""

from __future__ import annotations

import contextlib
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


@meter.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The meter's config.json (the file provisioning writes to a board).",
)
@click.option("--broker", default=None, help="mqtt://host:port (overrides the config's broker).")
@click.option("--vm", is_flag=True, help="Run the firmware in the MicroPython VM (needs Node).")
@click.option(
    "--trace",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CSV with t_s,pv_w,load_w driving PV and load (repeats); default: constant values.",
)
@click.option(
    "--flash",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory that holds the meter's flash (state survives restarts).",
)
@click.option("--soc", "soc_bp", type=click.IntRange(0, 10000), default=5000, show_default=True)
@click.option("--pv-w", type=click.IntRange(0), default=0, show_default=True)
@click.option("--load-w", type=click.IntRange(0), default=500, show_default=True)
@click.option("--lock-export-w", type=click.IntRange(0), default=2000, show_default=True)
def virtual(
    config_path: Path,
    broker: str | None,
    vm: bool,
    trace: Path | None,
    flash: Path | None,
    soc_bp: int,
    pv_w: int,
    load_w: int,
    lock_export_w: int,
) -> None:
    """Run one virtual meter: the real firmware with a simulated battery, PV and load.

    Hosted on CPython by default, or in the MicroPython VM with --vm (the firmware's MQTT
    client bridged through this process). Runs until Ctrl-C or SIGTERM.
    """
    from hil.virtual.meter import (
        SimSettings,
        VirtualMeter,
        load_meter_config,
        load_trace,
        run_meter,
    )

    config = load_meter_config(config_path, broker=broker)
    sim = SimSettings(
        soc_bp=soc_bp,
        pv_w=pv_w,
        load_w=load_w,
        lock_export_w=lock_export_w,
        trace=load_trace(trace) if trace is not None else None,
    )
    where = flash or config_path.parent / f"{config['device_id']}.flash"
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    vmeter = VirtualMeter(config=config, flash=where, sim=sim, vm=vm)
    mode = "MicroPython VM" if vm else "CPython"
    with contextlib.suppress(KeyboardInterrupt):
        run_meter(
            vmeter,
            stop=stop,
            on_start=lambda: click.echo(
                f"meter {config['device_id']} ({mode}) -> "
                f"mqtt://{config['broker_host']}:{config.get('broker_port', 1883)}, flash {where}"
            ),
        )
