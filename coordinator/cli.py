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
