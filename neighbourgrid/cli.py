"""The ``ngrid`` command: one group per part, each loaded only when it is used.

Every part keeps its commands in its own ``cli`` module (``edge.cli``, ``coordinator.cli`` …);
this module only knows their names. :func:`main` is the single place where an
:class:`edge.errors.NgridError` becomes a one-line message and an exit code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import click

from edge.errors import NgridError
from neighbourgrid import __version__

__all__ = ["cli", "main"]

# name -> (module, attribute, one-line help). The help is here so that `ngrid --help` lists every
# part without importing any of them.
PARTS: dict[str, tuple[str, str, str]] = {
    "market": ("edge.cli", "market", "Replay order logs through the matching engine."),
    "gateway": ("edge.cli", "gateway", "Run the neighbourhood gateway (MQTT, orders, ledger)."),
    "coordinator": ("coordinator.cli", "coordinator", "Verify gateway batches and anchor them."),
    "provision": ("provisioning.cli", "provision", "Flash and register meters, set up gateways."),
    "meter": ("hil.cli", "meter", "Run virtual meters on the real firmware."),
    "simulate": ("neighbourgrid.simulate", "simulate", "Simulate a neighbourhood end to end."),
}


class PartsGroup(click.Group):
    """A group whose subcommands are imported lazily from :data:`PARTS`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(PARTS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in PARTS:
            return None
        module, attr, _ = PARTS[cmd_name]
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module}.{attr} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, _, help_) in PARTS.items()]
        with formatter.section("Parts"):
            formatter.write_dl(rows)


@click.group(cls=PartsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ngrid")
def cli() -> None:
    """neighbourgrid: trade energy between neighbours.

    Meters report their battery's state of charge over MQTT; a gateway per neighbourhood matches
    orders in a continuous double auction, proves each seller's charge covers the sale, locks the
    energy and settles; a coordinator verifies the gateways' batches and anchors them on Soroban.

    Run `ngrid PART --help` for the commands of each part.
    """


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ngrid`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status.

    Exit status: 0 success; 1 a failure the message explains; 2 a usage or configuration error;
    130 interrupted.
    """
    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except NgridError as err:
        click.echo(f"ngrid: error: {err}", err=True)
        return err.exit_code
    except click.exceptions.Exit as exit_:
        return exit_.exit_code
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.Abort:
        click.echo("ngrid: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
