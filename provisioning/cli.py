"""``ngrid provision``: the installer's commands for meters and gateways.

Thin click wrappers: each command parses its options, calls one typed function
(:func:`provisioning.gateway.provision_gateway`, :func:`provisioning.gateway.export_registry`,
:func:`provisioning.meter.provision_meters`) and prints what it did. Failures are raised as
:class:`provisioning.errors.ProvisionError` and reported by :func:`neighbourgrid.cli.main`.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import click

from provisioning.inventory import DEFAULT_INVENTORY, Inventory

__all__ = ["provision"]

#: The firmware next to this package in a checkout (``pip install -e .``).
DEFAULT_DEVICE_DIR = Path(__file__).resolve().parent.parent / "device"


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
    click.echo(
        f"  homes         {len(bundle.record.home_tokens)} with an API token in "
        f"{bundle.path(PurePosixPath('/etc/ngrid/gateway.toml'))}"
    )
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
        for home, token_fingerprint in sorted(gw.home_tokens.items()):
            click.echo(f"  home {home}  API token {token_fingerprint}")
        for m in inventory.meters(gateway=gw.id):
            click.echo(
                f"  meter {m.id}  key {m.key_fingerprint}  owner {m.owner}  "
                f"{m.capacity_wh} Wh  reserve {m.reserve_bp} bp  chip {m.chip or '-'}  "
                f"self-test {m.self_test}  by {m.provisioned_by} at {m.provisioned_at}"
            )


def _tqdm_factory(label: str, total: int, slot: int) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total, desc=label, unit="B", unit_scale=True, position=slot, leave=True, ascii=True
    )


def _per_port(values: tuple[Any, ...], ports: tuple[str, ...], name: str) -> list[Any]:
    if len(values) == 1:
        return [values[0]] * len(ports)
    if len(values) != len(ports):
        raise click.BadParameter(
            f"give {name} once (for every board) or once per --port ({len(ports)} times)",
            param_hint=name,
        )
    return list(values)


@provision.command("meter")
@click.option("--port", "ports", multiple=True, required=True, help="Serial port (repeatable).")
@click.option("--gateway", "gateway_id", required=True, help="Gateway the meter reports to.")
@click.option(
    "--owner",
    "owners",
    multiple=True,
    required=True,
    help="Home id on the gateway's API, e.g. no-4 (per port).",
)
@click.option(
    "--capacity-wh",
    "capacities",
    type=click.IntRange(min=1),
    multiple=True,
    required=True,
    help="Usable battery capacity in Wh (per port).",
)
@click.option(
    "--reserve-bp",
    "reserves",
    type=click.IntRange(0, 10_000),
    multiple=True,
    help="State of charge never sold, basis points (per port)  [default: 2000]",
)
@click.option("--meter-id", "meter_ids", multiple=True, help="Id for a new meter (per port).")
@click.option(
    "--image",
    type=click.Path(dir_okay=False, path_type=Path),
    help="MicroPython image to flash first (needs --sha256).",
)
@click.option("--sha256", help="The image's SHA-256 as published with the download.")
@click.option("--erase", is_flag=True, help="Erase the whole flash before flashing --image.")
@click.option("--chip", help="Refuse boards of any other chip family (e.g. esp32, esp32s3).")
@click.option("--new-identity", is_flag=True, help="Give already provisioned boards a new id/key.")
@click.option(
    "--device-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The firmware to upload  [default: the checkout's device/]",
)
@click.option("--mpy", "compile_mpy", is_flag=True, help="Upload mpy-cross-compiled modules.")
@click.option("--wifi-ssid", help="Home WiFi network the meter joins.")
@click.option("--wifi-password", help="Its password.")
@click.pass_context
def meter_command(
    ctx: click.Context,
    ports: tuple[str, ...],
    gateway_id: str,
    owners: tuple[str, ...],
    capacities: tuple[int, ...],
    reserves: tuple[int, ...],
    meter_ids: tuple[str, ...],
    image: Path | None,
    sha256: str | None,
    erase: bool,
    chip: str | None,
    new_identity: bool,
    device_dir: Path | None,
    compile_mpy: bool,
    wifi_ssid: str | None,
    wifi_password: str | None,
) -> None:
    """Flash (optionally), upload the firmware, configure, self-test and register meters.

    Several --port options provision several boards at once. Re-running on a provisioned board
    keeps its identity (meter id, MAC key, broker password) unless --new-identity is given.
    """
    from provisioning.board import firmware_files
    from provisioning.errors import ProvisionError
    from provisioning.flash import check_image
    from provisioning.meter import MeterSpec, WifiSettings, provision_meters

    if image is not None and sha256 is None:
        raise click.BadParameter(
            "--image needs --sha256 (from the download page)", param_hint="--sha256"
        )
    if erase and image is None:
        raise click.BadParameter("--erase only makes sense with --image", param_hint="--erase")
    if (wifi_ssid is None) != (wifi_password is None):
        raise click.BadParameter("give --wifi-ssid and --wifi-password together")
    try:
        specs = [
            MeterSpec(
                port=port, owner=owner, capacity_wh=capacity, reserve_bp=reserve, meter_id=meter_id
            )
            for port, owner, capacity, reserve, meter_id in zip(
                ports,
                _per_port(owners, ports, "--owner"),
                _per_port(capacities, ports, "--capacity-wh"),
                _per_port(reserves or (2000,), ports, "--reserve-bp"),
                _per_port(meter_ids, ports, "--meter-id") if meter_ids else [None] * len(ports),
                strict=True,
            )
        ]
    except ValueError as err:
        raise click.BadParameter(str(err)) from err
    if meter_ids and len(set(meter_ids)) != len(meter_ids):
        raise click.BadParameter("each board needs its own --meter-id", param_hint="--meter-id")

    inventory = _inventory(ctx)
    inventory.gateway(gateway_id)  # unknown gateway: fail before touching any board
    checked = check_image(image, sha256=sha256) if image is not None else None
    files = firmware_files(device_dir or DEFAULT_DEVICE_DIR, compile_mpy=compile_mpy)
    wifi = (
        WifiSettings(ssid=wifi_ssid, password=wifi_password)
        if wifi_ssid and wifi_password
        else None
    )
    outcomes = provision_meters(
        inventory=inventory,
        specs=specs,
        gateway=gateway_id,
        files=files,
        image=checked,
        erase=erase,
        expect_chip=chip,
        new_identity=new_identity,
        wifi=wifi,
        progress=_tqdm_factory,
    )
    failed = [o for o in outcomes if o.error is not None]
    for outcome in outcomes:
        if outcome.record is not None:
            r = outcome.record
            kept = "kept its identity" if outcome.reused_identity else "new identity"
            click.echo(
                f"{outcome.port}: meter {r.id} ({kept}) key {r.key_fingerprint}, "
                f"{outcome.uploaded} files verified, self-test {r.self_test}"
            )
        elif len(outcomes) > 1:
            click.echo(f"{outcome.port}: FAILED: {outcome.error}", err=True)
    if failed:
        if len(outcomes) == 1 and failed[0].error is not None:
            raise failed[0].error
        names = ", ".join(o.port for o in failed)
        raise ProvisionError(
            f"{len(failed)} of {len(outcomes)} boards failed ({names}); "
            "fix them and re-run the same command: finished boards keep their identity"
        )
    click.echo(
        f"next: `ngrid provision gateway --name {gateway_id}` to refresh the broker's passwords "
        f"and ACL, then `ngrid provision export --gateway {gateway_id}`"
    )
