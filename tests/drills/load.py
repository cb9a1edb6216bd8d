"""A mixed load (create, reveal, update, list) over several service instances, and what it saw.

Each worker owns the credentials it created, so it knows which values a reveal may return: exactly the last value
acknowledged with 200, or, after an update that failed without an answer, that value or the one sent.
A client that finds an instance refusing connections sends the request to the next one, as a load balancer
whose health check took the instance out would; a request that was sent and got no answer counts as failed.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

API = "/api/v1/credentials"


@dataclass
class Owned:
    id: str
    allowed: set[str]
    """Values a reveal may return: the acknowledged one, plus any sent by an update that got no clear answer."""
    acknowledged: str


@dataclass
class Report:
    name: str
    seconds: float
    fault_at: float
    requests: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[float, str, str]] = field(default_factory=list)
    """(seconds since start, operation, status) of every failed request."""
    wrong_reveals: int = 0
    rerouted: int = 0
    owned: list[Owned] = field(default_factory=list)
    audit_lost: int = 0
    audit_checked: int = 0
    reconcile: str = ""
    cpu_ms_per_request: float | None = None
    """CPU the service processes spent per request (both instances together), when both ran throughout."""
    slowest_after_fault: float = 0.0
    """The longest any request took that was under way at or after the fault (calls wait through an election)."""

    @property
    def failed(self) -> Counter[str]:
        return Counter(status for _, _, status in self.failures)

    @property
    def error_window(self) -> float:
        """Seconds from the fault until the last failed request ended (0 when none failed)."""
        return max((t - self.fault_at for t, _, _ in self.failures), default=0.0)

    def table(self) -> str:
        failed = ", ".join(f"{status}: {n}" for status, n in sorted(self.failed.items())) or "none"
        rows = [
            ("requests", f"{self.requests} in {self.seconds:.0f} s ({self.requests / self.seconds:.0f}/s)"),
            ("failed, by status", failed),
            ("error window after the fault", f"{self.error_window:.2f} s"),
            ("slowest request after the fault", f"{self.slowest_after_fault:.2f} s"),
            ("rerouted (connection refused)", str(self.rerouted)),
            ("acknowledged creates audited", f"{self.audit_checked}, lost or wrong: {self.audit_lost}"),
            ("reveals with a wrong value", str(self.wrong_reveals)),
            ("reconcile after --apply", self.reconcile),
            (
                "service CPU per request",
                "n/a" if self.cpu_ms_per_request is None else f"{self.cpu_ms_per_request:.1f} ms",
            ),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join([f"drill: {self.name}", *(f"  {k.ljust(width)}  {v}" for k, v in rows)])


class MixedLoad:
    def __init__(self, urls: list[str], api_key: str, *, concurrency: int = 16) -> None:
        self.urls = urls
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.concurrency = concurrency

    async def run(self, name: str, seconds: float, fault_at: float, fault: Any) -> Report:
        """Run the load for ``seconds``; call ``fault()`` (in a thread) ``fault_at`` seconds in."""
        report = Report(name, seconds, fault_at)
        start = time.monotonic()
        limits = httpx.Limits(max_connections=self.concurrency * 2)
        async with httpx.AsyncClient(timeout=30, limits=limits, headers=self.headers) as http:

            async def worker(index: int) -> None:
                rng = random.Random(index)
                owned: list[Owned] = []
                while time.monotonic() - start < seconds:
                    await self._one(http, index, rng, owned, report, start)
                report.owned.extend(owned)

            async def inject() -> None:
                await asyncio.sleep(fault_at)
                await asyncio.to_thread(fault)

            await asyncio.gather(inject(), *(worker(i) for i in range(self.concurrency)))
        return report

    async def _one(
        self, http: httpx.AsyncClient, index: int, rng: random.Random, owned: list[Owned], report: Report, start: float
    ) -> None:
        roll = rng.random()
        if not owned or roll < 0.3:
            op = "create"
        elif roll < 0.65:
            op = "reveal"
        elif roll < 0.85:
            op = "update"
        else:
            op = "list"
        target = rng.choice(owned) if owned else None
        value = f"sk_drill_{secrets.token_hex(8)}"
        if op == "create":
            body: dict[str, Any] | None = {
                "label": "drill",
                "auth_type": "api_key",
                "credential_scope": "workspace",
                "credentials": {"api_key": value},
            }
            method, path = "POST", API
        elif op == "update":
            assert target is not None
            body, method, path = {"credentials": {"api_key": value}}, "PUT", f"{API}/{target.id}"
        elif op == "reveal":
            assert target is not None
            body, method, path = None, "POST", f"{API}/{target.id}/reveal"
        else:
            body, method, path = None, "GET", f"{API}?limit=20"

        sent = time.monotonic()
        status, payload = await self.send(http, index, method, path, body, report)
        ended = time.monotonic()
        if ended - start >= report.fault_at:
            report.slowest_after_fault = max(report.slowest_after_fault, ended - sent)
        report.requests += 1
        report.by_status[status] += 1
        if status != "200":
            report.failures.append((time.monotonic() - start, op, status))
            if op == "update" and target is not None:
                target.allowed.add(value)  # it may have landed
            return
        if op == "create":
            owned.append(Owned(payload["id"], {value}, value))
        elif op == "update" and target is not None:
            target.allowed, target.acknowledged = {value}, value
        elif op == "reveal" and target is not None:
            revealed = payload["credentials"].get("api_key")
            if revealed not in target.allowed:
                report.wrong_reveals += 1
            else:
                target.allowed, target.acknowledged = {revealed}, revealed

    async def send(
        self, http: httpx.AsyncClient, index: int, method: str, path: str, body: Any, report: Report
    ) -> tuple[str, Any]:
        """Send to this worker's instance; on a refused connection, to the next one (never after it was sent)."""
        for step in range(len(self.urls)):
            url = self.urls[(index + step) % len(self.urls)]
            try:
                response = await http.request(method, url + path, json=body)
            except httpx.ConnectError:
                report.rerouted += 1
                continue
            except httpx.TransportError as exc:
                return type(exc).__name__, None
            return str(response.status_code), response.json() if response.status_code == 200 else None
        return "no instance", None

    async def audit(self, report: Report) -> None:
        """Every credential acknowledged with 200 reveals the last value acknowledged (or one sent since)."""
        async with httpx.AsyncClient(timeout=30, headers=self.headers) as http:
            semaphore = asyncio.Semaphore(8)

            async def check(item: Owned) -> None:
                async with semaphore:
                    status, payload = await self.send(http, 0, "POST", f"{API}/{item.id}/reveal", None, report)
                report.audit_checked += 1
                if status != "200" or payload["credentials"].get("api_key") not in item.allowed:
                    report.audit_lost += 1

            await asyncio.gather(*(check(item) for item in report.owned))
