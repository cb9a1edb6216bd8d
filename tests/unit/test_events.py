"""Events without a server: the lead-time setting, the webhook settings' consistency, Standard Webhooks headers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from service.config import ConfigError, ExpirySettings, WebhookSettings
from service.events.types import DEFAULT_TYPES, OPT_IN, SUBSCRIBABLE, EventType
from service.webhooks import signing


def test_lead_times_parse_to_seconds_longest_first() -> None:
    assert ExpirySettings(lead_times="1d,7d,12h").leads() == [7 * 86400, 86400, 12 * 3600]
    assert ExpirySettings(lead_times="45s, 30m").leads() == [1800, 45]


@pytest.mark.parametrize("value", ["", "7x", "0d", "1d,,2d", "-1d"])
def test_a_bad_lead_time_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^CREDENTIALS_EXPIRY_LEAD_TIMES="):
        ExpirySettings(lead_times=value)


def test_the_lease_must_outlast_an_attempt() -> None:
    with pytest.raises(
        ConfigError, match="CREDENTIALS_WEBHOOKS_LEASE must be greater than CREDENTIALS_WEBHOOKS_TIMEOUT"
    ):
        WebhookSettings(timeout_seconds=10, lease_seconds=10)


def test_revealed_is_opt_in_and_the_test_ping_is_not_subscribable() -> None:
    assert EventType.credential_revealed not in DEFAULT_TYPES
    assert set(SUBSCRIBABLE) >= OPT_IN
    assert EventType.webhook_test not in SUBSCRIBABLE


def test_headers_verify_with_every_secret_they_were_signed_with_and_the_id_is_the_deliverys() -> None:
    old, new, delivery = signing.new_secret(), signing.new_secret(), uuid.uuid4()
    body = '{"type": "webhook.test"}'
    headers = signing.headers(delivery, body, [new, old])
    assert headers["webhook-id"] == f"msg_{delivery.hex}"
    assert Webhook(new).verify(body, headers) == {"type": "webhook.test"}
    assert Webhook(old).verify(body, headers) == {"type": "webhook.test"}
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)
    stale = signing.headers(delivery, body, [new], when=datetime.now(UTC) - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(new).verify(body, stale)
