"""Third parties of the events tests, as small real HTTP servers on loopback: a webhook receiver that verifies every
delivery with the ``standardwebhooks`` library, and an OAuth provider (token and RFC 7009 revocation endpoints).
Also ``credctl serve`` processes that a test can kill -9."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx
from standardwebhooks import Webhook, WebhookVerificationError

from devtools.stack import free_port
from tests.support.servers import CREDCTL


@dataclass
class Delivery:
    msg_id: str
    type: str
    body: bytes
    headers: dict[str, str]
    verified: bool
    at: float


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Receiver:
    """A webhook endpoint. ``secrets``: the signing secrets it accepts; ``mode``: ``ok`` (204), ``fail`` (500) or
    ``hang`` (holds each request until ``release()``, then 204)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.secrets: list[str] = []
        self.mode = "ok"
        self.arrivals: list[Delivery] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server: _Server | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified = receiver.verifies(body, headers)
                event_type = json.loads(body).get("type", "") if body else ""
                with receiver._lock:
                    receiver.arrivals.append(
                        Delivery(headers.get("webhook-id", ""), event_type, body, headers, verified, time.monotonic())
                    )
                mode = receiver.mode
                if mode == "hang":
                    receiver._released.wait(60)
                status = 500 if mode == "fail" else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._released.clear()
        self._server = _Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Close the port: deliveries are refused until ``start()``."""
        if self._server is not None:
            self._released.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def release(self) -> None:
        self.mode = "ok"
        self._released.set()

    def verifies(self, body: bytes, headers: dict[str, str]) -> bool:
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            return True
        return False

    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self.arrivals)

    def ids(self, event_type: str | None = None) -> list[str]:
        return [d.msg_id for d in self.snapshot() if event_type is None or d.type == event_type]

    def of_type(self, event_type: str) -> list[Delivery]:
        return [d for d in self.snapshot() if d.type == event_type]


@contextlib.contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@dataclass
class Provider:
    """An OAuth provider: ``/token`` (refresh) and ``/revoke`` (RFC 7009). ``token_mode``: ``ok``, ``down`` (503) or
    ``reject`` (400 invalid_grant); ``revoke_status``: what ``/revoke`` answers."""

    port: int = field(default_factory=free_port)
    token_mode: str = "ok"
    revoke_status: int = 200
    revocations: list[dict[str, Any]] = field(default_factory=list)
    _server: _Server | None = None

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def revocation_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/revoke"

    def start(self) -> None:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                form = {
                    k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()).items()
                }
                if self.path == "/revoke":
                    provider.revocations.append({"form": form, "authorization": self.headers.get("Authorization")})
                    self._answer(provider.revoke_status, b"")
                elif provider.token_mode == "down":
                    self._answer(503, b"{}")
                elif provider.token_mode == "reject":
                    self._answer(400, b'{"error": "invalid_grant"}')
                else:
                    self._answer(200, json.dumps({"access_token": f"at_{time.time_ns()}", "expires_in": 3600}).encode())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = _Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def basic(client_id: str, client_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()


class Instance:
    """``credctl serve`` in a process of its own, which a test may kill -9."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Instance:
        self.process = subprocess.Popen(
            [CREDCTL, "serve", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return self
            time.sleep(0.2)
        self.kill()
        raise AssertionError("credctl serve did not become ready")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup (what a crash or an OOM kill does)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
