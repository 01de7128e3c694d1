"""Command-line shells of the gateway's parts: ``ngrid market`` and ``ngrid gateway``.

Thin click wrappers: each command parses its options, calls a typed function of the core or the
service, and lets :class:`edge.errors.NgridError` propagate to :func:`neighbourgrid.cli.main`.
"""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["gateway", "market"]


@click.group()
def market() -> None:
    """The matching engine: a deterministic continuous double auction."""


@market.command("replay")
@click.argument("log", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "--policy",
    type=click.Choice(["price-time", "value-time"]),
    default="price-time",
    show_default=True,
    help="Priority within a price: earlier first, or larger remaining volume first.",
)
@click.option(
    "--max-matches",
    type=click.IntRange(min=1),
    default=None,
    help="Bound on the trades one order makes; what it leaves unmatched rests.",
)
@click.option(
    "--reservations", is_flag=True, help="Also print matched reservations (kind=reservation)."
)
def market_replay(log: str, policy: str, max_matches: int | None, reservations: bool) -> None:
    """Replay the order log LOG (JSON lines; - for stdin) and print one JSON trade per line.

    Same input, same bytes out. A malformed line stops the replay with its line number and
    field, and nothing is printed. See docs/market.md for the log format and the rules.
    """
    from edge.market import LogError, MarketError, MarketParams, replay_to_lines

    source = "<stdin>" if log == "-" else log
    params = MarketParams(policy=policy, max_matches=max_matches)
    try:
        with click.open_file(log, "r", encoding="utf-8") as stream:
            lines = replay_to_lines(stream, params, reservations=reservations)
    except LogError as err:
        raise err.with_source(source) from None
    except UnicodeDecodeError:
        raise MarketError(f"{source}: not UTF-8 text") from None
    out = click.get_binary_stream("stdout")  # UTF-8 whatever the locale: same bytes everywhere
    if lines:
        out.write(("\n".join(lines) + "\n").encode("utf-8"))
    out.flush()


@click.group()
def gateway() -> None:
    """The neighbourhood gateway service."""


@gateway.command("run")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="gateway.toml (see docs/gateway.md).",
)
@click.option(
    "--embedded-broker",
    is_flag=True,
    help="Start an amqtt broker on [mqtt] host/port (trials without Mosquitto).",
)
def gateway_run(config_path: Path, embedded_broker: bool) -> None:
    """Run the gateway until SIGTERM: MQTT ingest, matching, locks, ledger, batches, API."""
    import dataclasses

    from edge.gateway.config import load_config
    from edge.gateway.service import run_gateway

    config = load_config(config_path)
    if embedded_broker:
        config = dataclasses.replace(
            config, mqtt=dataclasses.replace(config.mqtt, embedded_broker=True)
        )
    run_gateway(config)


@gateway.command("check-config")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="gateway.toml to check.",
)
def gateway_check_config(config_path: Path) -> None:
    """Validate gateway.toml and the meter registry; print a summary or the first error by key."""
    from edge.gateway.config import load_config
    from edge.gateway.service import load_signing_key

    config = load_config(config_path)
    load_signing_key(config.signing_key)
    click.echo(
        f"gateway {config.id}: {len(config.meters)} meters, {len(config.homes)} homes, "
        f"broker {config.mqtt.host}:{config.mqtt.port}, API {config.api.host}:{config.api.port}, "
        f"ledger {config.ledger_path}"
    )


@gateway.command("init-config")
@click.option("--id", "gateway_id", required=True, help="Gateway id (letters, digits, . _ -).")
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for gateway.toml, gateway.key and the data files.",
)
def gateway_init_config(gateway_id: str, directory: Path) -> None:
    """Write a trial gateway.toml with every setting at its default, and a new Ed25519 key."""
    from edge.gateway.config import load_config
    from edge.gateway.sample import write_sample

    path = write_sample(directory=directory, gateway_id=gateway_id)
    load_config(path)
    click.echo(f"wrote {path} and {directory / 'gateway.key'}")


@gateway.command("export-batches")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="gateway.toml (its ledger.path is read).",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the batch files (created if missing).",
)
@click.option(
    "--from-seq",
    "first",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="The first batch to export.",
)
def gateway_export_batches(config_path: Path, out_dir: Path, first: int) -> None:
    """Write each sealed batch in the ledger to OUT/batch-NNNNNN.json (chain order).

    A file holds the batch's canonical bytes exactly as uploaded to the coordinator, the input
    of `ngrid coordinator verify`. Each file is written atomically; running it again rewrites
    the same bytes. Safe while the gateway runs.
    """
    from edge.gateway.config import load_config
    from edge.gateway.export import export_batches

    config = load_config(config_path)
    exported = export_batches(config, out_dir, first=first)
    for seq, path in exported.batches:
        click.echo(f"{path}  (batch {seq}, {path.stat().st_size} bytes)")
    click.echo(f"wrote {len(exported.batches)} batches of gateway {config.id} to {out_dir}")
