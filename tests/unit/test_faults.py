"""The crash points of the crash-consistency tests: armed only by a test setting, and only in dev mode."""

from __future__ import annotations

import pytest

from service.config import ConfigError, Settings
from service.faults import POINTS, FaultPoints, SimulatedCrash

BASE = {"DATABASE_URL": "postgresql://u@127.0.0.1/db", "VAULT_ADDR": "http://127.0.0.1:8200", "VAULT_TOKEN": "s.x"}


def test_a_fault_point_is_refused_outside_dev_mode() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**BASE, "CREDENTIALS_TEST_FAULT_POINT": "create.after_row"})
    assert str(refused.value) == "CREDENTIALS_TEST_FAULT_POINT is for tests only; it needs CREDENTIALS_DEV_MODE=true"


def test_an_unknown_fault_point_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**BASE, "CREDENTIALS_DEV_MODE": "true", "CREDENTIALS_TEST_FAULT_POINT": "create.later"})
    assert str(refused.value).startswith("CREDENTIALS_TEST_FAULT_POINT='create.later' is not one of create.after_row")


def test_unset_by_default() -> None:
    assert Settings.from_env(BASE).testing.fault_point is None


def test_an_armed_point_crashes_there_and_nowhere_else() -> None:
    faults = FaultPoints(raise_at="update.after_vault_write")
    for point in POINTS:
        if point != "update.after_vault_write":
            faults.reached(point)
    with pytest.raises(SimulatedCrash):
        faults.reached("update.after_vault_write")
    FaultPoints().reached("update.after_vault_write")  # unarmed: nothing
