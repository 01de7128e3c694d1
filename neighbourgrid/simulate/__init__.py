"""``ngrid simulate``: a neighbourhood end to end on real household data.

Real inputs (:mod:`neighbourgrid.simulate.inputs`: the BDEW H0 profile from demandlib, PV from
pvlib on a weather file pvlib ships), a seeded mix of homes (:mod:`~neighbourgrid.simulate.homes`)
with battery models (:mod:`~neighbourgrid.simulate.battery`), the physics of each home
(:mod:`~neighbourgrid.simulate.physics`), the run through every part of the system
(:mod:`~neighbourgrid.simulate.run`) and the report (:mod:`~neighbourgrid.simulate.report`).
A scenario file (:mod:`~neighbourgrid.simulate.scenario`, ``--scenario``) replaces the seeded mix
with listed homes and sets the location, weather, tariff and currency. See docs/simulate.md and
docs/scenario.md.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import click

from edge.errors import ConfigError

__all__ = ["result_line", "simulate"]

DEFAULT_START = "2025-04-11"
DEFAULT_HOMES = 24


def _parse_start(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--start must be a date like {DEFAULT_START}", key="start") from None


@click.command()
@click.option(
    "--homes",
    type=int,
    default=None,
    help=f"Number of homes [default: {DEFAULT_HOMES}]; not with --scenario.",
)
@click.option("--days", type=int, default=2, show_default=True, help="Simulated days.")
@click.option(
    "--seed",
    type=int,
    default=7,
    show_default=True,
    help="Seed of the home mix and of the prices homes do not set.",
)
@click.option(
    "--scenario",
    "scenario_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A scenario file (TOML, docs/scenario.md): homes, location, weather, tariff, currency.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory [default: runs/<UTC timestamp>].",
)
@click.option(
    "--broker",
    metavar="URL",
    default=None,
    help="Use this MQTT broker (mqtt://[user:pass@]host:port) instead of the embedded one.",
)
@click.option("--vm", is_flag=True, help="Run the meters' firmware in the MicroPython VM.")
@click.option(
    "--start",
    default=DEFAULT_START,
    show_default=True,
    help="First simulated day (the data sets cover 2025).",
)
@click.option("--no-progress", is_flag=True, help="Do not draw the progress bar.")
def simulate(
    homes: int | None,
    days: int,
    seed: int,
    scenario_file: Path | None,
    out: Path | None,
    broker: str | None,
    vm: bool,
    start: str,
    no_progress: bool,
) -> None:
    """Simulate a neighbourhood end to end and write a report.

    Household profiles and weather drive virtual meters through the broker, the gateway, the
    coordinator and the local Soroban stand-in. Writes summary.json, report.html, the gateway's
    ledger and the coordinator's store to --out.
    """
    from neighbourgrid.simulate.run import SimConfig, run
    from neighbourgrid.simulate.scenario import load_scenario

    scenario = None
    if scenario_file is not None:
        if homes is not None:
            raise ConfigError("the scenario file lists the homes: leave out --homes", key="homes")
        scenario = load_scenario(scenario_file)
        homes = len(scenario.homes)
    if out is None:
        out = Path("runs") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    config = SimConfig(
        homes=DEFAULT_HOMES if homes is None else homes,
        days=days,
        seed=seed,
        out=out,
        broker=broker,
        vm=vm,
        start=_parse_start(start),
        progress=not no_progress,
        scenario=scenario,
    )
    summary = run(config)
    click.echo(f"report: {out / 'report.html'}")
    click.echo(result_line(summary))


def result_line(summary: dict[str, object]) -> str:
    """The run's one-line result for the terminal, in kWh: trades, energy traded, and the grid
    import saved net of what trading took out of the batteries (summary.json ``saving_rule``)."""

    def kwh(key: str) -> str:
        value = summary.get(key)
        return f"{value / 1000:,.1f} kWh" if isinstance(value, int) else "?"

    return (
        f"{summary.get('trades')} trades, {kwh('wh_traded')} traded; grid import "
        f"{kwh('grid_import_wh_with_trading')} with trading vs "
        f"{kwh('grid_import_wh_without_trading')} without: {kwh('grid_import_saving_net_wh')} "
        f"saved net of the {kwh('battery_wh_stored_less_with_trading')} the batteries hold less"
    )
