"""The coordinator's exceptions: one subtree of :class:`edge.errors.NgridError`.

Only :func:`neighbourgrid.cli.main` turns them into an exit code and a one-line message.
"""

from __future__ import annotations

from edge.errors import ConfigError, NgridError

__all__ = [
    "AnchorRefusedError",
    "BatchRefusedError",
    "ConfigError",
    "CoordinatorError",
    "RegistrationConflict",
    "RegistrationError",
    "SorobanError",
    "StoreError",
    "SubmissionError",
]


class CoordinatorError(NgridError):
    """A failure of the coordinator service or one of its commands."""


class SorobanError(CoordinatorError):
    """Talking to Soroban (Stellar RPC) failed in a way retrying will not fix."""


class AnchorRefusedError(SorobanError, ValueError):
    """The anchor contract refused the call.

    ``code`` is the contract's error number (``Error(Contract, #code)``) and ``case`` its name
    (``OUT_OF_ORDER``, ``DUPLICATE_ROOT`` …; ``AUTH`` when the admin's authorisation was missing).
    """

    def __init__(self, message: str, *, code: int | None, case: str) -> None:
        self.code = code
        self.case = case
        super().__init__(message)


class SubmissionError(SorobanError):
    """A transaction could not be brought on chain (refused by the network, or it failed).

    ``tx_hash`` is the hex hash of the last envelope tried and ``result_code`` the transaction
    result code (``txBAD_AUTH``, ``txFAILED`` …) when the network gave one.
    """

    def __init__(
        self, message: str, *, tx_hash: str | None = None, result_code: str | None = None
    ) -> None:
        self.tx_hash = tx_hash
        self.result_code = result_code
        super().__init__(message)


class StoreError(CoordinatorError):
    """The coordinator's database cannot be opened or has a schema this version does not know."""


class RegistrationError(CoordinatorError, ValueError):
    """A gateway registration request is malformed or its self-signature does not verify."""


class RegistrationConflict(CoordinatorError, ValueError):
    """A registration contradicts the registry: ``reason`` is ``key`` (the gateway is registered
    with another public key) or ``meter`` (a meter already belongs to another gateway)."""

    def __init__(self, message: str, *, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


class BatchRefusedError(CoordinatorError):
    """``ngrid coordinator verify`` found a failing check (or could not finish: a held batch);
    the findings have been printed. ``failed`` counts the failing findings."""

    def __init__(self, message: str, *, failed: int) -> None:
        self.failed = failed
        super().__init__(message)
