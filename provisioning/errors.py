"""The installer tools' exceptions: one root, one subclass per failure an installer can act on.

Every message says what went wrong *and what to do about it*, in words for someone at a kitchen
table with a laptop and a USB cable. Only :func:`neighbourgrid.cli.main` turns these into an exit
code and a one-line message; the provisioning functions just raise.
"""

from __future__ import annotations

from edge.errors import NgridError

__all__ = [
    "BoardBusyError",
    "BoardStuckError",
    "ChecksumMismatchError",
    "FlashError",
    "ImageError",
    "InventoryError",
    "NoBoardError",
    "ProvisionError",
    "SelfTestError",
    "UnknownGatewayError",
    "UploadVerificationError",
    "WrongChipError",
]


class ProvisionError(NgridError):
    """A provisioning step failed; ``port`` names the board's serial port when there is one."""

    def __init__(self, message: str, *, port: str | None = None) -> None:
        self.port = port
        super().__init__(f"{port}: {message}" if port else message)


class NoBoardError(ProvisionError):
    """Nothing answers on the serial port (no such port, unplugged, or a charge-only cable)."""


class BoardBusyError(ProvisionError):
    """The serial port exists but another program holds it open (a serial monitor, mpremote …)."""


class WrongChipError(ProvisionError):
    """The chip on the port is not the family the image (or ``--chip``) was built for."""

    def __init__(self, message: str, *, port: str | None = None, found: str, expected: str) -> None:
        self.found = found
        self.expected = expected
        super().__init__(message, port=port)


class BoardStuckError(ProvisionError):
    """The board runs a program that ignores Ctrl-C, so its REPL cannot be reached."""


class ImageError(ProvisionError, ValueError):
    """The MicroPython image is missing, unreadable or not an ESP firmware image."""


class ChecksumMismatchError(ImageError):
    """The image's SHA-256 is not the one the installer was given (a corrupt or wrong download)."""

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(message)


class FlashError(ProvisionError):
    """esptool could not erase or write the flash."""


class UploadVerificationError(ProvisionError):
    """A file read back from the board does not hash to what was uploaded."""

    def __init__(self, message: str, *, port: str | None = None, paths: tuple[str, ...]) -> None:
        self.paths = paths
        super().__init__(message, port=port)


class SelfTestError(ProvisionError):
    """The firmware's on-board self-test reported a failure."""


class UnknownGatewayError(ProvisionError, LookupError):
    """The gateway named on the command line is not in the installer's inventory."""

    exit_code = 2

    def __init__(self, message: str, *, gateway: str) -> None:
        self.gateway = gateway
        super().__init__(message)


class InventoryError(ProvisionError):
    """The inventory or key store file is unreadable or malformed."""
