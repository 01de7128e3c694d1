"""``ngrid coordinator``: verify gateways' settlement batches and anchor them on Soroban."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["coordinator"]


@click.group()
def coordinator() -> None:
    """Verify signed settlement batches from gateways and anchor them on Soroban."""


@coordinator.command("soroban-local")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--ledger-close-ms",
    default=1000,
    show_default=True,
    type=click.IntRange(10, 60_000),
    help="Close a ledger this often.",
)
@click.option(
    "--passphrase",
    default="Standalone Network ; February 2017",
    show_default=True,
    help="Network passphrase.",
)
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Keep the chain in this JSON file (replayed on start).",
)
@click.option(
    "--deploy",
    is_flag=True,
    help="Fund the coordinator's account and deploy + init the anchor contract at start.",
)
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Coordinator secret key for --deploy (default: env NGRID_SOROBAN_SECRET).",
)
def soroban_local(
    host: str,
    port: int,
    ledger_close_ms: int,
    passphrase: str,
    state: Path | None,
    deploy: bool,
    secret_file: Path | None,
) -> None:
    """Run a local Stellar RPC stand-in with the anchor contract (for development and tests).

    It speaks Stellar RPC's JSON-RPC on http://HOST:PORT/ and funds accounts at /friendbot?addr=.
    See coordinator/soroban/rpc.py for what it models and what it does not.
    """
    import asyncio

    asyncio.run(
        _soroban_local(
            host=host,
            port=port,
            ledger_close_ms=ledger_close_ms,
            passphrase=passphrase,
            state=state,
            deploy=deploy,
            secret_file=secret_file,
        )
    )


async def _soroban_local(
    *,
    host: str,
    port: int,
    ledger_close_ms: int,
    passphrase: str,
    state: Path | None,
    deploy: bool,
    secret_file: Path | None,
) -> None:
    import asyncio

    from coordinator.soroban import (
        SorobanConfig,
        SqliteEnvelopeStore,
        Submitter,
        deploy_anchor_contract,
        local_soroban,
    )

    async with local_soroban(
        host=host,
        port=port,
        ledger_close_ms=ledger_close_ms,
        passphrase=passphrase,
        state_path=state,
    ) as rpc:
        click.echo(f"soroban-local: Stellar RPC on {rpc.url} (network {passphrase!r})")
        if deploy:
            config = SorobanConfig(
                rpc_url=rpc.url,
                network_passphrase=passphrase,
                contract_id="",
                secret_file=secret_file,
            )
            keypair = config.keypair()
            await rpc.fund(keypair.public_key)
            store = SqliteEnvelopeStore(path=":memory:")
            async with Submitter(config=config, store=store, keypair=keypair) as submitter:
                contract_id = await deploy_anchor_contract(submitter=submitter)
            store.close()
            click.echo(f"soroban-local: anchor contract {contract_id} (admin {keypair.public_key})")
        click.echo(
            f"soroban-local: closing a ledger every {ledger_close_ms} ms; Ctrl-C to stop", err=True
        )
        await asyncio.Event().wait()


@coordinator.command("serve")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="coordinator.toml (default: every setting at its default).",
)
def serve_command(config_path: Path | None) -> None:
    """Verify and anchor gateways' batches over HTTP (see docs/coordinator.md)."""
    import asyncio
    import logging

    from coordinator.config import default_config, load_config
    from coordinator.service import serve

    config = load_config(config_path) if config_path is not None else default_config()
    config.http.admin_token()  # a bad token file is a start-up error, not a runtime one
    if config.soroban.enabled:
        config.soroban.submitter_config("").keypair()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def ready(url: str) -> None:
        click.echo(f"coordinator: listening on {url} (store {config.store_path})")
        if config.soroban.enabled:
            click.echo(f"coordinator: anchoring through {config.soroban.rpc_url}")
        else:
            click.echo("coordinator: anchoring disabled ([soroban] enabled = false)")

    try:
        asyncio.run(serve(config, ready=ready))
    except KeyboardInterrupt:
        click.echo("coordinator: stopped", err=True)


@coordinator.command("init-config")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def init_config_command(path: Path) -> None:
    """Write a coordinator.toml with every setting at its default."""
    from coordinator.config import SAMPLE
    from coordinator.errors import CoordinatorError
    from edge.configfile import atomic_write_text

    try:
        atomic_write_text(path, SAMPLE, mode=0o644, overwrite=False)
    except FileExistsError:
        raise CoordinatorError(f"{path} exists; not overwriting it") from None
    except OSError as err:
        raise CoordinatorError(f"cannot write {path}: {err.strerror}") from err
    click.echo(f"wrote {path}")


@coordinator.command("verify")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--registry",
    "registrations",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A gateway's registration.json from `ngrid provision gateway` (repeatable).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="coordinator.toml for the community's [market], [settlement] and [verify] rules.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def verify_command(
    paths: tuple[Path, ...],
    registrations: tuple[Path, ...],
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Check batches offline, print the findings and one summary line; exit 1 on any failing
    check.

    Each PATH is a batch file or a directory: a run directory of `ngrid simulate` (its
    registration.json and every batches/batch-*.json), or a folder of batch files as
    `ngrid gateway export-batches` writes them (batch-*.json, and its registration.json if
    there is one). Give a gateway's batches from its first (or with every earlier one): each is
    checked against the ones before it, as the service does. A batch whose predecessor is
    missing is held, which also exits 1.
    """
    import json

    from coordinator.config import default_config, load_config
    from coordinator.errors import BatchRefusedError, ConfigError, CoordinatorError
    from coordinator.service import parse_registration
    from coordinator.verify import GatewayKey, verify_chain
    from edge.batch import Batch, BatchError, decode_batch

    config = load_config(config_path) if config_path is not None else default_config()
    batch_files, directories, found = _verify_inputs(paths)
    if directories and not found and not registrations:
        where = ", ".join(str(p) for p in directories)
        raise ConfigError(
            f"no registration.json in {where}: give the gateway's registration with --registry"
        )
    registry: dict[str, GatewayKey] = {}
    for path in dict.fromkeys([*registrations, *found]):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise CoordinatorError(f"cannot read {path}: {err.strerror}") from err
        except ValueError as err:
            raise CoordinatorError(f"{path} is not JSON: {err}") from err
        try:
            reg = parse_registration(document)
        except ValueError as err:
            raise CoordinatorError(f"{path}: {err}") from err
        registry[reg.gateway] = GatewayKey(
            id=reg.gateway, public_key=reg.public_key, meters=frozenset(reg.meters)
        )
    batches: list[Batch] = []
    names: dict[tuple[str, int], str] = {}  # the first file of each batch, for the summary
    for path in batch_files:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise CoordinatorError(f"cannot read {path}: {err.strerror}") from err
        try:
            batch = decode_batch(data.rstrip(b"\n"))
        except BatchError as err:
            raise BatchRefusedError(f"{path} is not a batch: {err}", failed=1) from err
        batches.append(batch)
        names.setdefault((batch.header.gateway, batch.header.seq), path.name)
    results = verify_chain(batches, registry=registry, rules=config.rules)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        for r in results:
            click.echo(f"{r.gateway}/{r.seq} {r.verdict}  (hash {r.hash.hex()})")
            for f in r.findings:
                where = f" [{f.trade}]" if f.trade else ""
                click.echo(f"  {f.status.upper():4} {f.check}{where}: {f.detail}")
    gateways = sorted({r.gateway for r in results})
    source = gateways[0] if len(gateways) == 1 else f"{len(gateways)} gateways"
    failed = sum(len(r.failures) for r in results)
    not_ok = [r for r in results if r.verdict != "accepted" or r.failures]
    if not not_ok:
        trades = sum(len(b.trades) for b in batches)
        click.echo(
            f"verified {len(results)} batches from {source} ({trades} trades): all checks passed",
            err=as_json,
        )
        return
    held = sum(1 for r in results if r.verdict == "held")
    named = []
    for r in not_ok[:5]:
        checks = dict.fromkeys(f.check for f in r.findings if f.status != "pass")
        file = names.get((r.gateway, r.seq), "?")
        named.append(f"{file} {r.gateway}/{r.seq} {r.verdict} [{', '.join(checks)}]")
    more = f"; and {len(not_ok) - 5} more" if len(not_ok) > 5 else ""
    raise BatchRefusedError(
        f"FAILED: {len(not_ok)} of {len(results)} batches from {source} not accepted "
        f"({failed} failing findings, {held} held): {'; '.join(named)}{more}",
        failed=failed,
    )


def _verify_inputs(paths: tuple[Path, ...]) -> tuple[list[Path], list[Path], list[Path]]:
    """The batch files PATHS name (files as given, directories expanded), the directories
    among PATHS and the registration files found in them."""
    from coordinator.errors import CoordinatorError
    from edge.gateway.export import BATCHES_DIR, REGISTRATION_FILE

    files: list[Path] = []
    directories: list[Path] = []
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)  # a missing file is reported when it is read
            continue
        directories.append(path)
        if (path / REGISTRATION_FILE).is_file():
            found.append(path / REGISTRATION_FILE)
        folder = path / BATCHES_DIR if (path / BATCHES_DIR).is_dir() else path
        batch_files = sorted(folder.glob("batch-*.json"))
        if not batch_files:
            raise CoordinatorError(f"no batch files (batch-*.json) in {folder}")
        files += batch_files
    return files, directories, found
