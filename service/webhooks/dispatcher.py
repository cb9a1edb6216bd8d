"""The dispatcher: every instance runs one. It claims due deliveries (``db/webhooks.py:claim``, ``FOR UPDATE SKIP
LOCKED`` and a lease), signs them (Standard Webhooks) and POSTs them, then records the answer.

Guarantees: at least once. An event is in the outbox from the commit of its change; a delivery is claimed by one
instance at a time; one whose instance dies mid-send is claimed again when its lease ends, with the same
``webhook-id``, so receivers deduplicate on it. Failed attempts are retried with exponential backoff and jitter for
``CREDENTIALS_WEBHOOKS_RETRY_FOR`` after the event, then the delivery is ``failed``; an endpoint that has failed for
``CREDENTIALS_WEBHOOKS_DISABLE_AFTER`` is disabled, with a ``webhook.disabled`` event. Order is not guaranteed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx

from db import database, outbox
from db import webhooks as rows
from service.config import WebhookSettings
from service.events import outbox as events
from service.events.types import EventType, WebhookData
from service.oauth import pinned
from service.oauth.egress import EgressRules
from service.webhooks import signing
from service.webhooks.service import owner
from vault.store import CallContext, SecretStore

log = logging.getLogger("service.webhooks")
ACTOR = "webhooks"
USER_AGENT = "credentials-service-webhooks/1"


class Dispatcher:
    def __init__(self, store: SecretStore, settings: WebhookSettings, rules: EgressRules) -> None:
        self.store = store
        self.settings = settings
        self.rules = rules
        self._secrets: dict[tuple[uuid.UUID, str], str] = {}
        """Decrypted signing secrets by (subscription, ciphertext): one Vault call per secret, not per attempt."""
        self._rounds = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set: poll again at once while there is a full batch, else after the interval.
        A round in progress finishes first, so no attempt is cut off between its send and its record."""
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.settings.timeout_seconds), trust_env=False) as client:
            while not stop.is_set():
                try:
                    claimed = await self.round(client)
                except Exception as exc:
                    log.error("webhook dispatch failed: %s", type(exc).__name__)  # safe: class name only
                    claimed = 0
                if claimed < self.settings.concurrency:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.settings.dispatch_interval_seconds)

    async def round(self, client: httpx.AsyncClient) -> int:
        """Claim and send one batch; returns how many were claimed."""
        self._rounds += 1
        if self._rounds % 3600 == 1:
            await outbox.prune(events.now() - timedelta(seconds=self.settings.event_retention_seconds))
        claimed = await rows.claim(self.settings.concurrency, self.settings.lease_seconds)
        if claimed:
            await asyncio.gather(*(self._deliver(client, row) for row in claimed))
        return len(claimed)

    async def _signing_secrets(self, row: dict[str, Any]) -> list[str]:
        call = CallContext(request_id=f"webhook-{row['id']}", actor=ACTOR, workspace=row["workspace_id"])
        found = []
        wanted = [row["secret_ciphertext"]]
        until = row["previous_valid_until"]
        if row["previous_secret_ciphertext"] and until is not None and until > events.now():
            wanted.append(row["previous_secret_ciphertext"])
        for ciphertext in wanted:
            key = (row["webhook_id"], ciphertext)
            if key not in self._secrets:
                secret = await self.store.unseal(call, owner(row["webhook_id"]), ciphertext)
                self._secrets[key] = secret.reveal().decode()
            found.append(self._secrets[key])
        return found

    async def _deliver(self, client: httpx.AsyncClient, row: dict[str, Any]) -> None:
        status: int | None = None
        try:
            body = row["payload"]
            headers = signing.headers(row["id"], body, await self._signing_secrets(row))
            headers["user-agent"] = USER_AGENT
            async with asyncio.timeout(self.settings.timeout_seconds):
                status = await pinned.post(client, row["url"], self.rules, headers=headers, content=body.encode())
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except pinned.Unreachable as exc:
            error = str(exc)
        except TimeoutError:
            error = f"no answer within {self.settings.timeout_seconds:g} s"
        except Exception as exc:  # a Vault failure to unseal the secret, a database hiccup: retried later
            error = f"not sent ({type(exc).__name__})"
        if error is None and status is not None:
            await _recorded(lambda: rows.delivered(row["id"], row["webhook_id"], status))
            return
        await _recorded(lambda: self._failed(row, status, error or "failed"))

    async def _failed(self, row: dict[str, Any], status: int | None, error: str) -> None:
        settings, when = self.settings, events.now()
        delay = min(settings.retry_base_seconds * 2 ** (row["attempts"] - 1), settings.retry_max_seconds)
        retry_at: datetime | None = when + timedelta(seconds=delay * random.uniform(0.5, 1.5))  # noqa: S311
        if retry_at is not None and retry_at > row["window_start"] + timedelta(seconds=settings.retry_for_seconds):
            retry_at = None
        async with database.transaction():
            await rows.attempt_failed(row["id"], status, error, retry_at)
            disabled = await rows.endpoint_failing(
                row["webhook_id"],
                when - timedelta(seconds=settings.disable_after_seconds),
                f"every delivery failed for {settings.disable_after_seconds} s; last: {error}"[:255],
            )
            if disabled is not None:
                await events.emit(
                    EventType.webhook_disabled,
                    WebhookData(
                        workspace_id=disabled["workspace_id"],
                        actor=ACTOR,
                        request_id=f"webhook-{row['id']}",
                        occurred_at=when,
                        webhook_id=str(disabled["id"]),
                        url=disabled["url"],
                        reason=error[:255],
                    ),
                )
        if disabled is not None:
            log.warning("webhook %s disabled: its endpoint failed for too long", disabled["id"])  # safe: id only


async def _recorded(write: Callable[[], Awaitable[None]]) -> None:
    """Record an attempt's outcome, trying a few times: a delivery sent but not recorded as such is sent again
    when its lease ends (a duplicate the receiver has to drop)."""
    for pause in (0.2, 0.5, 1.0):
        try:
            await write()
        except Exception as exc:
            log.warning("recording a webhook delivery failed (%s); trying again", type(exc).__name__)
            await asyncio.sleep(pause)
        else:
            return
    await write()
