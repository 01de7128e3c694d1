"""The root of every exception that neighbourgrid raises on purpose.

Each deployable part has its own subtree (``GatewayError`` here, ``CoordinatorError`` in
:mod:`coordinator.errors`, ``ProvisionError`` in :mod:`provisioning.errors`). Only the CLI's entry
point (:func:`neighbourgrid.cli.main`) turns them into an exit code and a one-line message.
"""

from __future__ import annotations

__all__ = ["ConfigError", "GatewayError", "NgridError"]


class NgridError(Exception):
    """A failure the user can act on: ``str(err)`` is the message, ``exit_code`` the status."""

    exit_code: int = 1


class GatewayError(NgridError):
    """A failure of the gateway service or one of its commands."""


class ConfigError(NgridError, ValueError):
    """A configuration file or option is missing, malformed or out of range.

    ``key`` names the offending setting (dotted path) when there is one.
    """

    exit_code = 2

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)
