"""The documentation pages load everything they reference from the service itself: no CDN, so they render offline
and under a strict Content-Security-Policy."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.config import Settings

PAGES = ["/schema/swagger", "/schema/redoc", "/schema/elements"]
ASSETS = Path(__file__).parents[2] / "service" / "docs_assets"


@pytest.fixture
async def offline() -> AsyncIterator[httpx.AsyncClient]:
    """The app without its lifespan (the pages need neither Postgres nor Vault)."""
    settings = Settings.from_env(
        {"DATABASE_URL": "postgresql://nobody@db.invalid/x", "VAULT_ADDR": "http://vault.invalid", "VAULT_TOKEN": "s.x"}
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.mark.parametrize("page", PAGES)
async def test_each_page_and_every_asset_it_references_come_from_the_service(
    offline: httpx.AsyncClient, page: str
) -> None:
    response = await offline.get(page)
    assert response.status_code == 200
    html = response.text
    # The page may embed the OpenAPI document, whose examples hold https URLs (a proxy's base_url); what it loads
    # (src, href, CSS url(), @import) must not be outside.
    loaded = re.findall(
        r"""(?:src|href)=["'](?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import\s+["'](?:https?:)?//""", html
    )
    assert not loaded, "the page loads something from outside"
    referenced = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assets = [url for url in referenced if url.startswith("/schema/assets/")]
    assert len(assets) >= 2 if page != "/schema/redoc" else len(assets) == 1, referenced
    for url in assets:
        fetched = await offline.get(url)
        assert fetched.status_code == 200, url
        assert fetched.content == (ASSETS / url.removeprefix("/schema/assets/")).read_bytes()
        kind = "css" if url.endswith(".css") else "javascript"
        assert kind in fetched.headers["content-type"], url


def test_every_vendored_package_keeps_its_licence() -> None:
    for package in ("swagger-ui", "redoc", "elements"):
        assert (ASSETS / package / "LICENSE").read_text().strip(), package
