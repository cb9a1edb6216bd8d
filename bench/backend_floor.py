"""The backend floor: each endpoint's backend operations issued directly (the service's repositories + the
SecretStore's hvac thread pool), at a given concurrency, with no HTTP at all. One process per cell, like a server.

    python -m bench.backend_floor --op get --concurrency 32 --duration 5 --ids FILE  (env: DATABASE_URL, VAULT_*)

Prints one JSON object: requests, errors, seconds, rps, p50_ms, p90_ms, p99_ms, max_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from typing import Any

from bench.backend import Backend

WORDS = ("stripe", "github", "openai", "twilio", "slack", "aws", "gcp", "azure", "sendgrid", "mailgun")


async def run(op: str, concurrency: int, duration: float, ids: list[str]) -> dict[str, Any]:
    async with Backend.from_env() as backend:
        return await measure(backend, op, concurrency, duration, ids)


async def measure(backend: Backend, op: str, concurrency: int, duration: float, ids: list[str]) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    next_delete = 0

    async def one() -> None:
        nonlocal next_delete
        if op == "get":
            await backend.get(random.choice(ids))
        elif op == "list":
            await backend.list(100 * random.randrange(10), 100)
        elif op == "search":
            await backend.list(0, 100, random.choice(WORDS))
        elif op == "update":
            await backend.update(random.choice(ids), f"updated {random.randrange(10**6)}")
        elif op == "reveal":
            await backend.reveal(random.choice(ids))
        elif op == "create":
            await backend.create(
                {
                    "label": f"{random.choice(WORDS)} bench {uuid.uuid4().hex[:8]}",
                    "auth_type": "api_key",
                    "credential_scope": "workspace",
                    "credentials": {"api_key": f"sk_bench_{uuid.uuid4().hex}"},
                }
            )
        elif op == "delete":
            cid = ids[next_delete % len(ids)]
            next_delete += 1
            await backend.delete(cid)
        else:
            raise SystemExit(f"unknown op {op}")

    # A short warm-up so pools and connections are open, as they are in a server that has been running.
    await asyncio.gather(*(backend.get(random.choice(ids)) for _ in range(min(concurrency, 8)))) if op not in (
        "delete",
        "create",
    ) and ids else None

    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                await one()
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 3) if latencies else 0.0

    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 3) if latencies else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--op", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--ids", default=None)
    args = parser.parse_args()
    ids = open(args.ids).read().split() if args.ids else []
    print(json.dumps(asyncio.run(run(args.op, args.concurrency, args.duration, ids))))


if __name__ == "__main__":
    main()
