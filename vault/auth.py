"""The service's Vault identity: a static token, or AppRole login with renewal and re-login (a lifetime watcher).

hvac has no lifetime watcher, so this is HashiCorp's pattern (vault-examples ``token-renewal``) by hand:

1. log in (``auth/<mount>/login``) and remember the token's TTL;
2. at about 2/3 of the TTL, renew it (``auth/token/renew-self``) while renewal still grants the full increment;
3. once renewal is capped by the role's ``token_max_ttl`` (or fails, or the token is not renewable), log in again;
4. when a call gets 403 and the token it used is dead (``lookup-self`` fails), log in again and let the caller retry
   once. A 403 while the token is alive is a policy refusal: no new login, the caller sees the 403.

The hvac client is shared by every worker thread, so swapping its token is serialized by one lock; threads that
were waiting find the work already done (the token changed, or the deadline moved) and go on. A failed login is
remembered for a moment, so a burst of requests with a revoked secret id fails fast instead of hammering Vault.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import hvac
import hvac.exceptions
import requests

from vault.errors import VaultError, VaultLoginFailed, translate

log = logging.getLogger("vault.auth")

# Renew when this share of the TTL has passed (HashiCorp's LifetimeWatcher uses about 2/3).
RENEW_AT = 2 / 3
# After a failed login, calls fail at once with the same error for this long, then a login is tried again.
LOGIN_BACKOFF_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What ``auth/token/lookup-self`` says about a token (the parts the service decides on)."""

    policies: tuple[str, ...]
    ttl: int
    renewable: bool

    @property
    def is_root(self) -> bool:
        return "root" in self.policies


class TokenManager:
    """Keeps the shared client's token valid. This base class holds a static token: renewed if renewable, never
    replaced (there is nothing to log in with)."""

    def __init__(self, client: hvac.Client, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self._clock = clock
        self._lock = threading.Lock()
        # None: no deadline (a root or periodic token with ttl 0, or not looked up yet).
        self._renew_at: float | None = None
        self._expires_at: float | None = None
        self._ttl = 0
        self._renewable = False

    # -- what SecretStore calls -------------------------------------------------------------------------------

    def start(self) -> TokenInfo:
        """Make sure a usable token is in place (log in if needed); returns what Vault says about it."""
        with self._lock:
            self._establish()
            return self._lookup()

    def ensure_fresh(self) -> None:
        """Renew or replace the token if its renewal point has passed; cheap when it has not."""
        if not self._due():
            return
        with self._lock:
            if self._due():  # another thread may have refreshed it while this one waited
                self._refresh()

    def recover(self, failed_token: str) -> bool:
        """After a 403 with ``failed_token``: True if a different, live token is now in place (retry the call)."""
        with self._lock:
            if self.client.token != failed_token:
                return True  # another thread already replaced it
            if not self.can_login:
                return False
            try:
                self.client.auth.token.lookup_self()
            except hvac.exceptions.Forbidden:
                log.warning("the Vault token was refused (expired or revoked); logging in again")  # safe: fixed text
                self._login()
                return True
            return False  # the token is alive: the 403 is the policy's answer

    def seconds_until_due(self) -> float | None:
        """Seconds until the next renewal point, or None when the token needs no care."""
        renew_at = self._renew_at
        return None if renew_at is None else max(0.0, renew_at - self._clock())

    @property
    def can_login(self) -> bool:
        return False

    # -- internals (called with the lock held) ----------------------------------------------------------------

    def _due(self) -> bool:
        renew_at = self._renew_at
        return renew_at is not None and self._clock() >= renew_at

    def _establish(self) -> None:
        info = self._lookup()
        self._schedule(info.ttl, info.renewable)

    def _lookup(self) -> TokenInfo:
        data = self.client.auth.token.lookup_self()["data"]
        return TokenInfo(
            policies=tuple(data.get("policies") or ()),
            ttl=int(data.get("ttl") or 0),
            renewable=bool(data.get("renewable")),
        )

    def _schedule(self, ttl: int, renewable: bool) -> None:
        now = self._clock()
        self._ttl, self._renewable = ttl, renewable
        if ttl <= 0:
            self._renew_at = self._expires_at = None
        else:
            self._renew_at, self._expires_at = now + ttl * RENEW_AT, now + ttl

    def _refresh(self) -> None:
        expired = self._expires_at is not None and self._clock() >= self._expires_at
        if self._renewable and not expired and self._renew():
            return
        if self.can_login:
            try:
                self._login()
            except VaultError:
                if self._expires_at is not None and self._clock() < self._expires_at:
                    return  # the current token still works: keep using it, and try again after the backoff
                raise
        elif expired:
            log.error("the static Vault token expired; set a new VAULT_TOKEN or use AppRole")  # safe: fixed text
            self._renew_at = None  # nothing more can be done: calls get 403
        else:
            self._renew_at = self._expires_at  # not renewable any more: look again when it expires, to say so

    def _renew(self) -> bool:
        """Renew by the original TTL; False when Vault capped the renewal (max TTL near) or refused it."""
        increment = self._ttl
        try:
            auth = self.client.auth.token.renew_self(increment=f"{increment}s")["auth"]
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            log.warning("renewing the Vault token failed (%s); %s", type(exc).__name__, self._fallback())  # safe: class
            return False
        granted = int(auth["lease_duration"])
        if granted < increment:
            # Capped by token_max_ttl: the next renewal would extend it even less, so use what is left to log in.
            log.info("the Vault token reached its max TTL (%ss left); %s", granted, self._fallback())  # safe: TTL
            self._expires_at = self._clock() + granted
            return False
        self._schedule(increment, bool(auth["renewable"]))
        log.debug("renewed the Vault token for %ss", granted)  # safe: the TTL only
        return True

    def _fallback(self) -> str:
        return "logging in again" if self.can_login else "it will expire"

    def _login(self) -> None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class AppRoleLogin:
    """How the service logs in with AppRole. ``secret_id`` may be a function (e.g. reading ``VAULT_SECRET_ID_FILE``):
    it is called before each login, so a secret id rotated in place is used from the next login on."""

    role_id: str = field(repr=False)
    secret_id: str | Callable[[], str] = field(repr=False)
    mount: str = "approle"


class AppRoleTokenManager(TokenManager):
    """Logs in with AppRole (role id + secret id) and keeps the token valid by renewing it or logging in again."""

    def __init__(
        self, client: hvac.Client, login: AppRoleLogin, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(client, clock=clock)
        self._role_id = login.role_id
        self._secret_id = login.secret_id
        self._mount_point = login.mount
        self._failed: tuple[float, VaultError] | None = None

    def __repr__(self) -> str:
        return f"AppRoleTokenManager(mount_point={self._mount_point!r})"  # never the role or secret id

    @property
    def can_login(self) -> bool:
        return True

    def _establish(self) -> None:
        self._login()

    def _login(self) -> None:
        if self._failed is not None:
            when, failure = self._failed
            if self._clock() - when < LOGIN_BACKOFF_SECONDS:
                raise failure
        try:
            secret_id = self._secret_id() if callable(self._secret_id) else self._secret_id
            response = self.client.auth.approle.login(
                role_id=self._role_id, secret_id=secret_id, use_token=False, mount_point=self._mount_point
            )
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            error: VaultError = self._login_error(exc)
            self._fail(error)
            raise error from exc
        except OSError as exc:  # requests' errors are OSErrors too: they are caught above
            error = VaultLoginFailed(f"cannot read the AppRole secret id: {exc.strerror} ({exc.filename})")
            self._fail(error)
            raise error from exc
        self._failed = None
        auth = response["auth"]
        self.client.token = auth["client_token"]
        self._schedule(int(auth["lease_duration"]), bool(auth["renewable"]))
        log.info("logged in to Vault with AppRole (token TTL %ss)", auth["lease_duration"])  # safe: the TTL only

    @staticmethod
    def _login_error(exc: Exception) -> VaultError:
        if isinstance(exc, hvac.exceptions.InvalidRequest | hvac.exceptions.Forbidden):
            reason = "; ".join(str(e) for e in exc.errors or []) or type(exc).__name__
            return VaultLoginFailed(
                f"AppRole login refused by Vault ({reason}): the secret id is revoked, expired or used up, or the "
                "role id is wrong; issue a new secret id (credctl vault-bootstrap --approle-out DIR --new-secret-id)"
                " and restart the service"
            )
        return translate(exc)

    def _fail(self, error: VaultError) -> None:
        self._failed = (self._clock(), error)
        # Calls now fail fast until the backoff passes; the next one after that tries to log in again.
        self._renew_at = self._clock()
        self._renewable = False
        log.error("Vault login failed: %s", error)
