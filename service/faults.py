"""Crash points for the crash-consistency tests: the service dies at a named step of a write, as a power cut would.

``CREDENTIALS_TEST_FAULT_POINT`` (accepted only with ``CREDENTIALS_DEV_MODE=true``) names one point; the process
sends itself SIGKILL when it reaches it, so no ``finally``, no undo and no commit runs. In-process tests use
``raise_at`` instead: ``SimulatedCrash`` propagates through the service without its undo steps running (open
transactions roll back, as Postgres does for a dead connection), leaving what a real crash leaves.
Unarmed (production), ``reached`` is one comparison.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "create.after_row",  # a pending row, no secret yet
    "create.after_vault_write",  # a pending row and its secret in KV
    "update.after_vault_write",  # KV one version ahead of the row (transaction not committed)
    "update.after_version_record",  # the same, with the version record written in the open transaction
    "restore.after_vault_write",  # a version restore: as an update
    "restore.after_version_record",
    "refresh.after_vault_write",  # an OAuth refresh: as an update
    "refresh.after_version_record",
    "delete.after_hide",  # the row hidden as deleting, its secret still in KV
    "delete.after_vault_destroy",  # the secret destroyed, the deleting row not yet removed
)
"""Every point, in the order of the steps of create, update and delete."""


class SimulatedCrash(BaseException):
    """Raised at an armed point by in-process tests; the service lets it through without undoing anything."""


class FaultPoints:
    """Where the write paths may die on purpose; nothing is armed unless a test arms it."""

    def __init__(self, kill_at: str | None = None, raise_at: str | None = None) -> None:
        for point in (kill_at, raise_at):
            if point is not None and point not in POINTS:
                raise ValueError(f"unknown fault point {point!r}; one of {', '.join(POINTS)}")
        self.kill_at = kill_at
        self.raise_at = raise_at

    def reached(self, point: str) -> None:
        if point == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if point == self.raise_at:
            raise SimulatedCrash(point)


def is_crash(exc: BaseException) -> bool:
    """A simulated crash: undo nothing, as a dead process would."""
    return isinstance(exc, SimulatedCrash)
