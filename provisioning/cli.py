"""``ngrid provision``: the installer's commands for meters and gateways.

Thin click wrappers: each command parses its options, calls one typed function
(:func:`provisioning.gateway.provision_gateway`, :func:`provisioning.gateway.export_registry`,
:func:`provisioning.meter.provision_meters`) and prints what it did. Failures are raised as
:class:`provisioning.errors.ProvisionError` and reported by :func:`neighbourgrid.cli.main`.
"""

from __future__ import annotations

from pathlib import Path

import click

from provisioning.inventory import DEFAULT_INVENTORY, Inventory

__all__ = ["provision"]


def _inventory(ctx: click.Context) -> Inventory:
    path: Path = ctx.obj["inventory_path"]
    inventory = Inventory(path=path)
    ctx.call_on_close(inventory.close)
    return inventory


@click.group()
@click.option(
    "--inventory",
    "inventory_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_INVENTORY,
    show_default=True,
    envvar="NGRID_INVENTORY",
    help="The installer's inventory (TinyDB JSON); MAC keys go to <name>.keys.json beside it.",
)
@click.pass_context
def provision(ctx: click.Context, inventory_path: Path) -> None:
    """Flash and register meters, set up gateways (esptool, mpremote)."""
    ctx.ensure_object(dict)
    ctx.obj["inventory_path"] = inventory_path


@provision.command("gateway")
@click.option("--name", required=True, help="Gateway id (lower-case letters, digits, '-').")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Bundle directory to write  [default: ./gateway-NAME]",
)
@click.option(
    "--broker-host",
    default=None,
    help="How meters reach this gateway's broker  [default: ngrid-NAME.local]",
)
@click.option("--broker-port", type=click.IntRange(1, 65535), default=1883, show_default=True)
@click.option("--bind", default="0.0.0.0", show_default=True, help="Plain listener's address.")
@click.option("--tls-ca", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--tls-port", type=click.IntRange(1, 65535), default=8883, show_default=True)
@click.option("--coordinator-url", default="http://coordinator.invalid:8700", show_default=True)
@click.option("--api-port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--new-identity", is_flag=True, help="Replace the gateway's key pair and password.")
@click.pass_context
def gateway_command(
    ctx: click.Context,
    name: str,
    out_dir: Path | None,
    broker_host: str | None,
    broker_port: int,
    bind: str,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_port: int,
    coordinator_url: str,
    api_port: int,
    new_identity: bool,
) -> None:
    """Create or refresh a gateway's bundle: keys, gateway.toml, systemd unit, Mosquitto files,
    and the registration request for the coordinator. Safe to re-run: the key pair is kept."""
    from provisioning.gateway import provision_gateway

    inventory = _inventory(ctx)
    try:
        from provisioning.inventory import validate_id

        validate_id(name, what="gateway")
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--name") from err
    bundle = provision_gateway(
        inventory=inventory,
        name=name,
        out_dir=out_dir or Path(f"gateway-{name}"),
        broker_host=broker_host or f"ngrid-{name}.local",
        broker_port=broker_port,
        bind=bind,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_port=tls_port,
        coordinator_url=coordinator_url,
        api_port=api_port,
        new_identity=new_identity,
    )
    verb = "refreshed" if bundle.reused_identity else "created"
    click.echo(f"gateway {bundle.record.id}: bundle {verb} in {bundle.directory}")
    click.echo(f"  signing key   {bundle.record.key_fingerprint} (Ed25519)")
    click.echo(f"  broker        {bundle.record.broker_host}:{bundle.record.broker_port}")
    click.echo(f"  meters        {len(bundle.meters)} in the password file and ACL")
    click.echo(f"  registration  {bundle.directory / 'registration.json'} -> send to coordinator")
    click.echo(f"  inventory     {inventory.path}")


@provision.command("export")
@click.option("--gateway", "gateway_id", required=True, help="Gateway whose meters to export.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Registry file  [default: BUNDLE/root/etc/ngrid/meters.json]",
)
@click.pass_context
def export_command(ctx: click.Context, gateway_id: str, out: Path | None) -> None:
    """Hand a gateway its meter registry: id, MAC key, capacity, reserve, owner (SECRET, 0600)."""
    from provisioning.gateway import export_registry

    path, count = export_registry(inventory=_inventory(ctx), gateway=gateway_id, out=out)
    click.echo(f"gateway {gateway_id}: {count} meter(s) with their MAC keys written to {path}")
    click.echo("  this file is secret: copy it to the gateway only, then delete stray copies")


@provision.command("list")
@click.pass_context
def list_command(ctx: click.Context) -> None:
    """Show the inventory: gateways and meters with key fingerprints."""
    inventory = _inventory(ctx)
    gateways = inventory.gateways()
    if not gateways:
        click.echo(f"{inventory.path}: no gateways yet")
    for gw in gateways:
        click.echo(
            f"gateway {gw.id}  key {gw.key_fingerprint}  broker {gw.broker_host}:"
            f"{gw.broker_port}  by {gw.provisioned_by} at {gw.provisioned_at}"
        )
        for m in inventory.meters(gateway=gw.id):
            click.echo(
                f"  meter {m.id}  key {m.key_fingerprint}  owner {m.owner}  "
                f"{m.capacity_wh} Wh  reserve {m.reserve_bp} bp  chip {m.chip or '-'}  "
                f"self-test {m.self_test}  by {m.provisioned_by} at {m.provisioned_at}"
            )
