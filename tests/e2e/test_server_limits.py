"""The HTTP server's own limits against unauthenticated clients (issue 16, point 1), on a real ``credctl serve``:
oversized headers, headers that never finish, and too many connections."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from service.config import Settings
from tests.support.servers import Served, env_for, serving

pytestmark = pytest.mark.e2e
HEADER_TIMEOUT = 2.0
MAX_CONNECTIONS = 80


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[Served]:
    env = env_for(
        settings,
        CREDENTIALS_HTTP_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        CREDENTIALS_HTTP_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    )
    with serving(env) as served:
        yield served


def address(server: Served) -> tuple[str, int]:
    parts = urlsplit(server.url)
    return str(parts.hostname), int(parts.port or 80)


def rss(server: Served) -> int:
    return int(psutil.Process(server.pid).memory_info().rss)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def test_a_header_over_16_kb_is_431(server: Served) -> None:
    with socket.create_connection(address(server), timeout=10) as sock:
        sock.sendall(b"GET /api/v1/credentials HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        answer = read_all(sock)

    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]


def test_a_header_of_15_kb_is_still_served(server: Served) -> None:
    response = httpx.get(f"{server.url}/health/live", headers={"X-Pad": "a" * 15_000}, timeout=10)

    assert response.status_code == 200


def stream_huge_header(server: Served, size: int, outcome: dict[str, object]) -> None:
    """Send one header of ``size`` bytes without credentials; record how much the server took before refusing."""
    sent, started = 0, time.monotonic()
    chunk = b"a" * (1024 * 1024)
    with socket.create_connection(address(server), timeout=10) as sock:
        try:
            sock.sendall(b"GET /api/v1/credentials HTTP/1.1\r\nHost: x\r\nX-Big: ")
            while sent < size:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        answer = read_all(sock)
    outcome.update(sent=sent, seconds=time.monotonic() - started, answer=answer[:40])


def test_five_clients_sending_20_mb_headers_are_cut_off_and_memory_stays_bounded(server: Served) -> None:
    before = rss(server)
    peak = before
    outcomes: list[dict[str, object]] = [{} for _ in range(5)]
    threads = [threading.Thread(target=stream_huge_header, args=(server, 20 * 1024 * 1024, o)) for o in outcomes]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        peak = max(peak, rss(server))
        time.sleep(0.05)

    growth_mb = (peak - before) / 1024 / 1024
    print(f"RSS before {before / 2**20:.0f} MB, peak {peak / 2**20:.0f} MB, outcomes {outcomes}")
    assert growth_mb < 30, f"RSS grew by {growth_mb:.0f} MB"
    for outcome in outcomes:
        assert int(outcome["sent"]) < 20 * 1024 * 1024  # type: ignore[call-overload]
        assert float(outcome["seconds"]) < 10  # type: ignore[arg-type]
        assert outcome["answer"] in (b"", b"HTTP/1.1 431 Request Header Fields Too L")
    assert httpx.get(f"{server.url}/health/live", timeout=10).status_code == 200


async def slowloris(server: Served, results: list[tuple[float, bytes]]) -> None:
    host, port = address(server)
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    writer.write(b"GET /api/v1/credentials HTTP/1.1\r\nHost: x\r\n")
    answer = b""
    try:
        for n in range(40):
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(1024), timeout=0.5)
            except TimeoutError:
                writer.write(b"X-Slow-%d: 1\r\n" % n)
                continue
            break
    except ConnectionError:
        pass
    results.append((time.monotonic() - started, answer))
    writer.close()


async def test_fifty_slowloris_connections_are_closed_after_the_header_timeout(server: Served) -> None:
    results: list[tuple[float, bytes]] = []

    await asyncio.gather(*(slowloris(server, results) for _ in range(50)))

    assert len(results) == 50
    for seconds, answer in results:
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer
        assert HEADER_TIMEOUT - 0.5 < seconds < HEADER_TIMEOUT + 3
    response = await asyncio.to_thread(httpx.get, f"{server.url}/health/live", timeout=10)
    assert response.status_code == 200


async def test_connections_beyond_the_limit_get_503(server: Served) -> None:
    host, port = address(server)
    held = [await asyncio.open_connection(host, port) for _ in range(MAX_CONNECTIONS)]
    try:
        reader, writer = await asyncio.open_connection(host, port)
        answer = await asyncio.wait_for(reader.read(1024), timeout=5)
        writer.close()
    finally:
        for _, w in held:
            w.close()

    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable"), answer
