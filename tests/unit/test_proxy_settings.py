"""The proxy's settings: defaults, and the one rule across fields."""

from __future__ import annotations

import pytest

from service.config import ConfigError, Settings

BASE = {"DATABASE_URL": "postgresql://nobody@db.invalid/x", "VAULT_ADDR": "http://vault.invalid", "VAULT_TOKEN": "s.x"}


def test_the_defaults() -> None:
    proxy = Settings.from_env(BASE).proxy
    assert (proxy.timeout_seconds, proxy.grant_default_ttl_seconds, proxy.grant_max_ttl_seconds) == (30.0, 900, 86400)
    assert (proxy.max_request_bytes, proxy.max_response_bytes, proxy.check_interval_seconds) == (
        10 * 1024 * 1024,
        50 * 1024 * 1024,
        0,
    )


def test_a_default_grant_lifetime_above_the_maximum_stops_the_start() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**BASE, "CREDENTIALS_GRANT_MAX_TTL": "60"})
    assert str(refused.value) == "CREDENTIALS_GRANT_DEFAULT_TTL=900 is above CREDENTIALS_GRANT_MAX_TTL=60"


def test_an_out_of_range_timeout_names_the_variable() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**BASE, "CREDENTIALS_PROXY_TIMEOUT": "0"})
    assert str(refused.value).startswith("CREDENTIALS_PROXY_TIMEOUT='0' is out of range")
