"""The secret store: each credential's secret encrypted by transit and kept, as ciphertext only, in KV v2.

hvac is synchronous, so every call runs in a bounded thread pool (sized like the HTTP pool to Vault) and
never on the event loop. One transit key with ``derived=true`` encrypts everything; the derivation context
names the workspace and the credential, so a ciphertext copied to another credential's path cannot be
decrypted there. The context is used rather than ``associated_data`` because rewrap ignores associated data.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import hvac

from vault.auth import AppRoleLogin, AppRoleTokenManager, TokenInfo, TokenManager
from vault.batcher import Batcher, Caller
from vault.client import ACTOR_HEADER, REQUEST_ID_HEADER, WORKSPACE_HEADER, audit_headers, make_client
from vault.errors import VaultError, VaultPermissionDenied, VaultRequestRejected, translated
from vault.nodes import NodeRing, RetryPolicy
from vault.secret import Secret
from vault.transport import Headers, VaultTransport, headers_of

T = TypeVar("T")

log = logging.getLogger("vault.store")

WORKSPACES_PREFIX = "workspaces"


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who a Vault call is made for; sent as audited headers so the audit log ties it to the API request.

    Every store method takes one: calls made for no API request (start-up, token renewal, health checks,
    maintenance jobs) name what made them instead (``request_id`` such as ``purge-<run>``).
    """

    request_id: str
    actor: str
    workspace: str

    def headers(self) -> dict[str, str]:
        return {REQUEST_ID_HEADER: self.request_id, ACTOR_HEADER: self.actor, WORKSPACE_HEADER: self.workspace}

    @property
    def caller(self) -> Caller:
        return (self.request_id, self.actor, self.workspace)


@dataclass(frozen=True, slots=True)
class FastPath:
    """The request path's Vault calls over aiohttp (``vault.transport``), transit calls micro-batched.

    ``batch_max_wait`` (seconds) bounds how long an encrypt or decrypt waits for others to share its call;
    ``batch_max_size`` bounds how many items one call carries (OpenBao refuses bodies of more than 1000 strings).
    """

    batch_max_wait: float = 0.002
    batch_max_size: int = 64


ANY_WORKSPACE = "*"
"""The workspace of a call that spans workspaces (listing every workspace's folder, the service's own token)."""
SERVICE_ACTOR = "credentials-service"
"""The actor of calls the service makes on its own behalf (start-up, token renewal, health checks)."""


@dataclass(frozen=True, slots=True)
class StoredSecret:
    """Where a secret version lives in KV."""

    path: str
    version: int


def secret_path(workspace_id: str, credential_id: str) -> str:
    """KV path of one credential: it names the workspace and the credential, readable in every audit entry."""
    return f"{WORKSPACES_PREFIX}/{quote(workspace_id, safe='')}/credentials/{credential_id}"


def derivation_context(workspace_id: str, credential_id: str) -> str:
    """Transit context (base64) binding a ciphertext to its workspace and credential."""
    raw = f"workspace:{workspace_id}|credential:{credential_id}".encode()
    return base64.b64encode(raw).decode()


class SecretStore:
    """Async facade over transit + KV v2. Methods raise only ``vault.errors.VaultError`` subclasses."""

    def __init__(
        self,
        client: hvac.Client,
        *,
        workers: int,
        transit_mount: str,
        transit_key: str,
        kv_mount: str,
        token_manager: TokenManager | None = None,
        fast_path: FastPath | None = FastPath(),
        timeout: float = 5.0,
        cacert: str | None = None,
        ring: NodeRing | None = None,
        failover_seconds: float = 10.0,
    ) -> None:
        self._client = client
        self.ring = ring or NodeRing([str(client.url).rstrip("/")])
        """The Vault nodes and the one asked first, shared by the hvac session and the aiohttp transport."""
        self._auth = token_manager or TokenManager(client)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vault")
        self.transit_mount = transit_mount
        self.transit_key = transit_key
        self.kv_mount = kv_mount
        # Without a fast path (the benchmark's plain floor), every call goes through hvac in the thread pool.
        self._http: VaultTransport | None = None
        self._encrypts: Batcher | None = None
        self._decrypts: Batcher | None = None
        if fast_path is not None:
            # The same nodes, in the same order of preference, as the hvac client's failover session (``ring``).
            self._http = VaultTransport(
                self.ring,
                lambda: str(client.token),
                pool_size=workers,
                timeout=timeout,
                policy=RetryPolicy(kv_mount=kv_mount, transit_mount=transit_mount),
                wait_seconds=failover_seconds,
                cacert=cacert,
            )
            wait, size = fast_path.batch_max_wait, fast_path.batch_max_size
            self._encrypts = Batcher(self._batch_call("encrypt"), max_wait=wait, max_size=size)
            self._decrypts = Batcher(self._batch_call("decrypt"), max_wait=wait, max_size=size)

    @classmethod
    def connect(
        cls,
        addr: str | Sequence[str],
        login: str | AppRoleLogin,
        *,
        workers: int,
        timeout: float,
        transit_mount: str = "transit",
        transit_key: str = "credentials",
        kv_mount: str = "credentials",
        fast_path: FastPath | None = FastPath(),
        failover_seconds: float = 10.0,
        cacert: str | None = None,
    ) -> SecretStore:
        """A store that calls Vault with the token ``login``, or with the tokens an AppRole ``login`` obtains; over
        ``https``, Vault's certificate must chain to the CA in ``cacert`` (else to the system's trust store).
        Nothing is sent to Vault until ``start()``."""
        # An empty token until the AppRole login sets one: hvac would fall back to VAULT_TOKEN on None.
        token = "" if isinstance(login, AppRoleLogin) else login
        # Several nodes: hvac's failover session and the aiohttp fast path apply one policy (vault.nodes) over one ring
        # of nodes, so both find the active node, skip sealed or unreachable ones and replay only what is safe.
        addrs = (addr,) if isinstance(addr, str) else tuple(addr)
        ring = NodeRing(addrs)
        policy = RetryPolicy(kv_mount=kv_mount, transit_mount=transit_mount)
        client = make_client(
            addrs,
            token,
            pool_size=workers,
            timeout=timeout,
            policy=policy,
            failover_seconds=failover_seconds,
            cacert=cacert,
            ring=ring,
        )
        manager = AppRoleTokenManager(client, login) if isinstance(login, AppRoleLogin) else TokenManager(client)
        return cls(
            client,
            workers=workers,
            transit_mount=transit_mount,
            transit_key=transit_key,
            kv_mount=kv_mount,
            token_manager=manager,
            fast_path=fast_path,
            timeout=timeout,
            cacert=cacert,
            ring=ring,
            failover_seconds=failover_seconds,
        )

    @property
    def token(self) -> str:
        """The token the store calls Vault with right now (tests prove its policy with it; never log it)."""
        return str(self._client.token)

    def queued_calls(self) -> int:
        """Vault calls waiting for a worker thread (the pool is saturated while this is above 0)."""
        return self._executor._work_queue.qsize()  # the stdlib exposes no public count

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._client.adapter.close()

    async def aclose(self) -> None:
        """Send the batches still waiting, close the aiohttp session, then ``close()``."""
        for batcher in (self._encrypts, self._decrypts):
            if batcher is not None:
                await batcher.close()
        if self._http is not None:
            await self._http.close()
        self.close()

    async def _call(
        self, headers: Headers, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One call over aiohttp with a token not due for renewal; on 403 with a dead token, log in and retry once
        (the same rules as ``_with_fresh_token``; renewals and log-ins are hvac calls, in the pool)."""
        assert self._http is not None
        loop = asyncio.get_running_loop()
        if self._auth.seconds_until_due() == 0.0:
            await loop.run_in_executor(self._executor, translated(self._auth.ensure_fresh))
        token = str(self._client.token)
        try:
            return await self._http.call(method, path, headers, body)
        except VaultPermissionDenied:
            if not await loop.run_in_executor(self._executor, translated(self._auth.recover), token):
                raise
        return await self._http.call(method, path, headers, body)

    def _batch_call(self, operation: str) -> Any:
        async def send(items: list[dict[str, str]], callers: list[Caller]) -> list[dict[str, Any]]:
            path = f"{self.transit_mount}/{operation}/{self.transit_key}"
            response = await self._call(headers_of(callers), "POST", path, {"batch_input": items})
            return list(response["data"]["batch_results"])

        return send

    async def _run(self, ctx: CallContext, fn: Callable[[], T]) -> T:
        headers = ctx.headers()

        def call() -> T:
            with audit_headers(headers):
                return translated(self._with_fresh_token)(fn)

        # In the caller's context (run_in_executor does not carry it over): the request's trace span is the parent of
        # the Vault call's span.
        return await asyncio.get_running_loop().run_in_executor(self._executor, contextvars.copy_context().run, call)

    def _with_fresh_token(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` with a token not yet due for renewal; on 403 with a dead token, log in again and retry once."""
        self._auth.ensure_fresh()
        token = self._client.token
        try:
            return fn()
        except hvac.exceptions.Forbidden:
            if not self._auth.recover(token):
                raise
        return fn()

    async def start(self, ctx: CallContext) -> TokenInfo:
        """Log in (AppRole) or check the static token; raises ``VaultError`` when Vault refuses or cannot answer."""
        return await self._run(ctx, self._auth.start)

    async def keep_token_fresh(self) -> None:
        """Renew (or replace) the token at about 2/3 of its TTL, also while no request comes; runs until cancelled.

        Calls check the token themselves too (``ensure_fresh``), so a late wake-up here costs nothing but a
        renewal done by a request; failures are logged and retried, never raised.
        """
        ctx = CallContext(request_id="token-renewal", actor=SERVICE_ACTOR, workspace=ANY_WORKSPACE)
        while True:
            due = self._auth.seconds_until_due()
            await asyncio.sleep(60.0 if due is None else min(max(due, 0.05), 60.0))
            try:
                await self._run(ctx, lambda: None)  # _run renews the token first when it is due
            except VaultError as exc:
                log.warning("keeping the Vault token fresh failed: %s", type(exc).__name__)  # safe: class name
                await asyncio.sleep(1.0)

    # -- the operations the credential data path uses ---------------------------------------------------------

    async def create(self, ctx: CallContext, credential_id: str, plaintext: Secret) -> StoredSecret:
        """Encrypt and store the first version, create-only (``cas=0``).

        No metadata call: the path names the workspace and the credential, the audit entry of the write names the
        request and the actor, and the versions kept are the mount's ``max_versions`` (``credctl vault-bootstrap``).
        """
        ciphertext = await self.encrypt(ctx, credential_id, plaintext)
        version = await self.write_ciphertext(ctx, credential_id, ciphertext, 0)
        return StoredSecret(path=secret_path(ctx.workspace, credential_id), version=version)

    async def update(self, ctx: CallContext, credential_id: str, plaintext: Secret, expected_version: int) -> int:
        """Store a new version if the current one is ``expected_version`` (else ``VersionConflict``)."""
        ciphertext = await self.encrypt(ctx, credential_id, plaintext)
        return await self.write_ciphertext(ctx, credential_id, ciphertext, expected_version)

    async def write_ciphertext(
        self, ctx: CallContext, credential_id: str, ciphertext: str, expected_version: int
    ) -> int:
        """Store an already encrypted (or rewrapped) version with check-and-set."""
        path = secret_path(ctx.workspace, credential_id)
        if self._http is not None:
            body = {"options": {"cas": expected_version}, "data": {"ciphertext": ciphertext}}
            response = await self._call(headers_of([ctx.caller]), "POST", f"{self.kv_mount}/data/{path}", body)
            return int(response["data"]["version"])

        def write() -> int:
            response = self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret={"ciphertext": ciphertext}, cas=expected_version, mount_point=self.kv_mount
            )
            return int(response["data"]["version"])

        return await self._run(ctx, write)

    async def read_ciphertext(self, ctx: CallContext, credential_id: str, version: int) -> str:
        """The ciphertext of one version (``SecretNotFound`` if it does not exist or was destroyed)."""
        path = secret_path(ctx.workspace, credential_id)
        if self._http is not None:
            # A deleted or destroyed version answers 404 (SecretNotFound), as hvac's raise_on_deleted_version.
            response = await self._call(
                headers_of([ctx.caller]), "GET", f"{self.kv_mount}/data/{path}?version={int(version)}"
            )
            return str(response["data"]["data"]["ciphertext"])

        def read() -> str:
            response = self._client.secrets.kv.v2.read_secret_version(
                path=path, version=version, mount_point=self.kv_mount, raise_on_deleted_version=True
            )
            return str(response["data"]["data"]["ciphertext"])

        return await self._run(ctx, read)

    async def rewrap(self, ctx: CallContext, items: list[tuple[str, str, str]]) -> list[str]:
        """Rewrap ``(workspace, credential, ciphertext)`` items to the key's newest version, in one batch call.

        The plaintext never leaves Vault. Keep batches small (about 100): OpenBao refuses JSON bodies with more
        than 1000 strings.
        """
        batch = [
            {"ciphertext": ciphertext, "context": derivation_context(workspace, credential)}
            for workspace, credential, ciphertext in items
        ]

        def rewrap() -> list[str]:
            response = self._client.adapter.post(
                f"/v1/{self.transit_mount}/rewrap/{self.transit_key}", json={"batch_input": batch}
            )
            results = response["data"]["batch_results"]
            errors = [r["error"] for r in results if r.get("error")]
            if errors:
                raise VaultRequestRejected(f"rewrap failed for {len(errors)} item(s): {errors[0]}")
            return [str(r["ciphertext"]) for r in results]

        return await self._run(ctx, rewrap)

    async def read(self, ctx: CallContext, credential_id: str, version: int) -> Secret:
        """The decrypted plaintext of one version: KV read, then a (batched) transit decrypt."""
        if self._decrypts is None:
            return await self.read_unbatched(ctx, credential_id, version)
        ciphertext = await self.read_ciphertext(ctx, credential_id, version)
        item = {"ciphertext": ciphertext, "context": derivation_context(ctx.workspace, credential_id)}
        result = await self._decrypts.submit(ctx.caller, item)
        return Secret(base64.b64decode(result["plaintext"]))

    async def encrypt(self, ctx: CallContext, credential_id: str, plaintext: Secret) -> str:
        """Transit encrypt with the credential's context, sharing a batch call with concurrent requests."""
        if self._encrypts is None:
            return await self.encrypt_unbatched(ctx, credential_id, plaintext)
        item = {
            "plaintext": base64.b64encode(plaintext.reveal()).decode(),
            "context": derivation_context(ctx.workspace, credential_id),
        }
        return str((await self._encrypts.submit(ctx.caller, item))["ciphertext"])

    async def read_unbatched(self, ctx: CallContext, credential_id: str, version: int) -> Secret:
        """KV read, then transit decrypt, each through hvac in the thread pool (the path without the batcher)."""
        ciphertext = await self.read_ciphertext(ctx, credential_id, version)

        def decrypt() -> Secret:
            response = self._client.secrets.transit.decrypt_data(
                name=self.transit_key,
                ciphertext=ciphertext,
                context=derivation_context(ctx.workspace, credential_id),
                mount_point=self.transit_mount,
            )
            return Secret(base64.b64decode(response["data"]["plaintext"]))

        return await self._run(ctx, decrypt)

    async def destroy(self, ctx: CallContext, credential_id: str) -> None:
        """Erase every version and the key's metadata (idempotent: a missing key is fine)."""
        path = secret_path(ctx.workspace, credential_id)
        await self._run(
            ctx, lambda: self._client.secrets.kv.v2.delete_metadata_and_all_versions(path, mount_point=self.kv_mount)
        )

    async def destroy_versions(self, ctx: CallContext, credential_id: str, versions: list[int]) -> None:
        """Permanently erase the data of some versions (used to undo a write the database never recorded)."""
        path = secret_path(ctx.workspace, credential_id)
        await self._run(
            ctx,
            lambda: self._client.secrets.kv.v2.destroy_secret_versions(
                path=path, versions=versions, mount_point=self.kv_mount
            ),
        )

    async def current_version(self, ctx: CallContext, credential_id: str) -> int | None:
        """KV's current version of a credential, or None when the key does not exist."""
        metadata = await self.metadata(ctx, credential_id)
        return None if metadata is None else int(metadata["current_version"])

    async def metadata(self, ctx: CallContext, credential_id: str) -> dict[str, Any] | None:
        """A credential's KV metadata (its versions, their times, whether destroyed), or None when it has none."""
        path = secret_path(ctx.workspace, credential_id)

        def read() -> dict[str, Any] | None:
            try:
                return dict(
                    self._client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=self.kv_mount)["data"]
                )
            except hvac.exceptions.InvalidPath:
                return None

        return await self._run(ctx, read)

    async def list_keys(self, ctx: CallContext, prefix: str) -> list[str]:
        """Keys directly under ``prefix`` in KV metadata (folders end with ``/``); empty when there are none."""

        def list_() -> list[str]:
            try:
                response = self._client.secrets.kv.v2.list_secrets(path=prefix, mount_point=self.kv_mount)
            except hvac.exceptions.InvalidPath:
                return []
            return [str(key) for key in response["data"]["keys"]]

        return await self._run(ctx, list_)

    async def ping(self, ctx: CallContext) -> bool:
        """True when Vault is initialized, unsealed and active (``sys/health`` is not audited)."""

        def health() -> bool:
            response = self._client.sys.read_health_status(method="GET")
            return getattr(response, "status_code", 200) == 200

        try:
            return await self._run(ctx, health)
        except VaultError:
            return False

    async def fingerprint(self, ctx: CallContext, data: Secret, key_version: int | None = None) -> str:
        """A keyed hash (transit HMAC, SHA-256) of ``data``, as ``vault:v<N>:<base64>``: comparable, and useless for
        guessing what ``data`` held without Vault's key (a plain hash of a short password is not)."""

        def hmac() -> str:
            response = self._client.secrets.transit.generate_hmac(
                name=self.transit_key,
                hash_input=base64.b64encode(data.reveal()).decode(),
                key_version=key_version,
                algorithm="sha2-256",
                mount_point=self.transit_mount,
            )
            return str(response["data"]["hmac"])

        return await self._run(ctx, hmac)

    async def encrypt_unbatched(self, ctx: CallContext, credential_id: str, plaintext: Secret) -> str:
        """One transit encrypt through hvac in the thread pool (the path without the batcher)."""

        def encrypt() -> str:
            response = self._client.secrets.transit.encrypt_data(
                name=self.transit_key,
                plaintext=base64.b64encode(plaintext.reveal()).decode(),
                context=derivation_context(ctx.workspace, credential_id),
                mount_point=self.transit_mount,
            )
            return str(response["data"]["ciphertext"])

        return await self._run(ctx, encrypt)

    # -- small secrets that are not credentials (webhook signing secrets) -------------------------------------

    async def seal(self, ctx: CallContext, owner: str, plaintext: Secret) -> str:
        """Encrypt a secret that is not a credential's (e.g. ``owner="webhook:<id>"``) under the context
        ``workspace:<wid>|<owner>``: its ciphertext, kept in Postgres, decrypts under that context only, never as a
        credential's (whose contexts name ``credential:``). Returns the ciphertext."""
        context = base64.b64encode(f"workspace:{ctx.workspace}|{owner}".encode()).decode()

        def encrypt() -> str:
            response = self._client.secrets.transit.encrypt_data(
                name=self.transit_key,
                plaintext=base64.b64encode(plaintext.reveal()).decode(),
                context=context,
                mount_point=self.transit_mount,
            )
            return str(response["data"]["ciphertext"])

        return await self._run(ctx, encrypt)

    async def unseal(self, ctx: CallContext, owner: str, ciphertext: str) -> Secret:
        """The plaintext of a ``seal``-ed secret of ``owner`` in ``ctx``'s workspace."""
        context = base64.b64encode(f"workspace:{ctx.workspace}|{owner}".encode()).decode()

        def decrypt() -> Secret:
            response = self._client.secrets.transit.decrypt_data(
                name=self.transit_key, ciphertext=ciphertext, context=context, mount_point=self.transit_mount
            )
            return Secret(base64.b64decode(response["data"]["plaintext"]))

        return await self._run(ctx, decrypt)
