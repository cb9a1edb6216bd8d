"""Vault's own ceiling: transit encrypt and KV v2 write rates on a (bootstrapped) cluster, at a given concurrency.

    python -m bench.vault_limits --addr http://127.0.0.1:8200 --token ... [--seconds 3] [--concurrency 16]

Each operation is the one the service's create path makes (a derived-key encrypt with a context; a create-only
KV write of a ciphertext), sent to the active node from ``concurrency`` threads over pooled connections, as the
service's worker pool sends them. Past this rate, more service replicas add no throughput.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import threading
import time
from collections.abc import Callable

import requests
import requests.adapters


def measure(addr: str, token: str, *, seconds: float = 3.0, concurrency: int = 16) -> dict[str, float]:
    """Operations per second of transit encrypt and of KV v2 create-only writes."""
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=concurrency))
    session.headers["X-Vault-Token"] = token
    run = secrets.token_hex(4)

    def encrypt(i: int) -> None:
        context = base64.b64encode(f"workspace:bench|credential:{run}-{i}".encode()).decode()
        plaintext = base64.b64encode(secrets.token_bytes(48)).decode()
        response = session.post(
            f"{addr}/v1/transit/encrypt/credentials", json={"plaintext": plaintext, "context": context}, timeout=10
        )
        response.raise_for_status()

    def kv_write(i: int) -> None:
        response = session.post(
            f"{addr}/v1/credentials/data/bench/{run}/{threading.get_ident()}-{i}",
            json={"data": {"ciphertext": f"vault:v1:{secrets.token_hex(48)}"}, "options": {"cas": 0}},
            timeout=10,
        )
        response.raise_for_status()

    return {
        "transit_encrypt_per_s": _rate(encrypt, seconds, concurrency),
        "kv_write_per_s": _rate(kv_write, seconds, concurrency),
    }


def _rate(op: Callable[[int], None], seconds: float, concurrency: int) -> float:
    done = [0] * concurrency
    stop = time.monotonic() + seconds

    def worker(slot: int) -> None:
        i = 0
        while time.monotonic() < stop:
            op(slot * 1_000_000 + i)
            i += 1
        done[slot] = i

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return round(sum(done) / (time.monotonic() - start), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="the active node (e.g. http://127.0.0.1:8200)")
    parser.add_argument("--token", required=True, help="a token allowed to encrypt and to write under bench/")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(measure(args.addr, args.token, seconds=args.seconds, concurrency=args.concurrency)))


if __name__ == "__main__":
    main()
