"""Token revocation at the provider (RFC 7009): the refresh token first (RFC 7009 section 2.1: revoking it may
revoke the access tokens issued with it), then the access token, each with the client's authentication.

Best effort by design: the caller revokes locally whatever the provider answers, and reports the outcome.
"""

from __future__ import annotations

import base64
import logging
import ssl
from dataclasses import dataclass, field
from urllib.parse import quote

import certifi
import httpx

from service.oauth import pinned
from service.oauth.client import ClientPolicy

log = logging.getLogger("service.oauth.revocation")


@dataclass(frozen=True, slots=True)
class RevocationRequest:
    """What the revocation sends (tokens and the client secret kept out of ``repr``)."""

    revocation_url: str
    refresh_token: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    post_client_secret: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """``revoked`` (every token accepted, HTTP 200) or ``failed`` with why (a status code or an error class)."""

    outcome: str
    detail: str | None = None

    def summary(self) -> str:
        return f"provider revocation {self.outcome}" + (f" ({self.detail})" if self.detail else "")


class Revoker:
    """Calls revocation endpoints under the token client's policy (timeout, egress rules)."""

    def __init__(self, policy: ClientPolicy) -> None:
        self.policy = policy
        self._ssl = ssl.create_default_context(cafile=certifi.where())

    async def revoke(self, request: RevocationRequest) -> Outcome:
        tokens = [
            (t, hint)
            for t, hint in ((request.refresh_token, "refresh_token"), (request.access_token, "access_token"))
            if t
        ]
        problems: list[str] = []
        async with httpx.AsyncClient(
            verify=self._ssl, timeout=httpx.Timeout(self.policy.timeout), trust_env=False
        ) as client:
            for token, hint in tokens:
                headers = {"Accept": "application/json"}
                form = {"token": token, "token_type_hint": hint}
                if request.client_secret and not request.post_client_secret:
                    pair = f"{quote(request.client_id or '', safe='')}:{quote(request.client_secret, safe='')}"
                    headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
                else:
                    if request.client_id:
                        form["client_id"] = request.client_id
                    if request.client_secret:
                        form["client_secret"] = request.client_secret
                try:
                    status = await pinned.post(
                        client, request.revocation_url, self.policy.egress, headers=headers, data=form
                    )
                except pinned.Unreachable as exc:
                    problems.append(f"{hint}: {exc}")
                    continue
                if status != 200:  # RFC 7009 section 2.2: 200 also for a token that was already invalid
                    problems.append(f"{hint}: HTTP {status}")
        if problems:
            log.warning("provider revocation failed: %s", "; ".join(problems))  # safe: hints, statuses, classes
            return Outcome("failed", "; ".join(problems)[:200])
        return Outcome("revoked")
