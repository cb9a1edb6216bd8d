"""The proxy bench (``python -m bench.proxy``): the service's proxy against calling the upstream directly, and
against reveal, side by side in one run.

It starts OpenBao and a database of its own (as ``just bench`` does), a local upstream (``bench.upstream``, one
uvicorn process on 127.0.0.1) and ``credctl serve`` allowed to call loopback, stores a pool of proxyable api_key
credentials, and drives with wrk at each concurrency: ``direct`` (the upstream alone), ``proxy`` (through the
service), ``reveal`` and ``get`` (the same credentials; reveal - get is the reveal path's Vault cost). One JSON line
and a table are printed; figures from a loaded machine are only comparable inside one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench.run import ROOT, free_port, server_env, start_stack, wrk

PYTHON = sys.executable
WORKSPACE = "bench-proxy"


def _wait(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited: {log.read_text()[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            requests.get(url, timeout=1)
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within 60 s")


def _start(command: list[str], env: dict[str, str], log: Path, url: str, stack: contextlib.ExitStack) -> None:
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()

    stack.callback(stop)
    _wait(url, process, log)


async def _api_key(database_url: str) -> str:
    from db.database import bind
    from service.auth import api_keys

    await asyncio.to_thread(bind, database_url)
    return (await api_keys.create(WORKSPACE, ["read", "write", "reveal", "use"], "bench")).key


def _pool(service: str, upstream: str, key: str, n: int) -> list[str]:
    ids = []
    with requests.Session() as session:
        for i in range(n):
            response = session.post(
                f"{service}/api/v1/credentials",
                json={
                    "label": f"proxy bench {i}",
                    "auth_type": "api_key",
                    "credential_scope": "workspace",
                    "credentials": {"api_key": f"sk_bench_{i:08d}"},
                    "proxy": {"base_url": upstream, "methods": ["GET"], "path_prefixes": ["/v1"]},
                },
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            response.raise_for_status()
            ids.append(response.json()["id"])
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__)
    parser.add_argument("--concurrency", default="1,32", help="comma-separated concurrencies [1,32]")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cell [10]")
    parser.add_argument("--pool", type=int, default=64, help="proxyable credentials [64]")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--vault-addr", default=None)
    parser.add_argument("--vault-token", default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp, contextlib.ExitStack() as exits:
        work = Path(tmp)
        stack = start_stack(args, work)
        exits.callback(stack.close)
        env = server_env(stack)
        env.update(CREDENTIALS_OAUTH_ALLOW_LOOPBACK="true", CREDENTIALS_OAUTH_PROACTIVE_INTERVAL="0")
        upstream_port, service_port = free_port(), free_port()
        upstream = f"http://127.0.0.1:{upstream_port}"
        service = f"http://127.0.0.1:{service_port}"
        uvicorn = [PYTHON, "-m", "uvicorn", "bench.upstream:app", "--port", str(upstream_port), "--no-access-log"]
        _start([*uvicorn, "--log-level", "warning"], env, work / "upstream.log", upstream + "/", exits)
        credctl = [str(Path(PYTHON).parent / "credctl"), "serve", "--port", str(service_port)]
        _start(credctl, env, work / "service.log", service + "/health/live", exits)
        key = asyncio.run(_api_key(stack.database_url))
        ids = work / "ids.txt"
        ids.write_text("\n".join(_pool(service, upstream, key, args.pool)) + "\n")
        cells: dict[str, dict[str, Any]] = {}
        for c in (int(x) for x in args.concurrency.split(",")):
            for op, url in (("direct", upstream), ("proxy", service), ("reveal", service), ("get", service)):
                cells[f"{op}@{c}"] = wrk(url, op, c, args.duration, key, ids, None)
                print(f"{op:>7} c={c:<3} {cells[f'{op}@{c}']}", flush=True)
        summary: dict[str, Any] = {"cells": cells, "cpus": os.cpu_count(), "loadavg": os.getloadavg()}
        rows = []
        for c in (int(x) for x in args.concurrency.split(",")):
            direct, proxy, reveal, get = (cells[f"{op}@{c}"] for op in ("direct", "proxy", "reveal", "get"))
            vault_cost = reveal["p50_ms"] - get["p50_ms"]
            added = proxy["p50_ms"] - direct["p50_ms"]
            rows.append(
                {
                    "concurrency": c,
                    "direct_p50_ms": direct["p50_ms"],
                    "proxy_p50_ms": proxy["p50_ms"],
                    "proxy_added_p50_ms": round(added, 2),
                    "reveal_vault_cost_p50_ms": round(vault_cost, 2),
                    "added_within_vault_cost_plus_2ms": added <= vault_cost + 2,
                    "proxy_rps": proxy["rps"],
                    "reveal_rps": reveal["rps"],
                    "proxy_over_reveal_rps": round(proxy["rps"] / reveal["rps"], 2) if reveal["rps"] else None,
                    "errors": {op: cells[f"{op}@{c}"]["errors"] for op in ("direct", "proxy", "reveal", "get")},
                }
            )
        summary["rows"] = rows
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
