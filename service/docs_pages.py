"""The API documentation pages with their assets served from the service itself (``service/docs_assets``), not
from public CDNs: they render offline and under a strict Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path

from litestar.openapi.plugins import OpenAPIRenderPlugin, RedocRenderPlugin, StoplightRenderPlugin, SwaggerRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

ASSETS = Path(__file__).parent / "docs_assets"
ASSETS_PATH = "/schema/assets"
# Litestar's default favicon is an image on a CDN; an empty inline one keeps the page to the service's own URLs.
NO_FAVICON = "<link rel='icon' href='data:,'>"


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """Swagger UI, Redoc and Stoplight Elements, each loading its scripts and styles from ``ASSETS_PATH``."""
    return [
        SwaggerRenderPlugin(
            version="5.18.2",
            js_url=f"{ASSETS_PATH}/swagger-ui/swagger-ui-bundle.js",
            standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui/swagger-ui-standalone-preset.js",
            css_url=f"{ASSETS_PATH}/swagger-ui/swagger-ui.css",
            favicon=NO_FAVICON,
        ),
        # No Google Fonts: Redoc falls back to the system's fonts.
        RedocRenderPlugin(
            version="2.4.0", js_url=f"{ASSETS_PATH}/redoc/redoc.standalone.js", google_fonts=False, favicon=NO_FAVICON
        ),
        StoplightRenderPlugin(
            version="7.7.18",
            js_url=f"{ASSETS_PATH}/elements/web-components.min.js",
            css_url=f"{ASSETS_PATH}/elements/styles.min.css",
            favicon=NO_FAVICON,
        ),
    ]


def assets_router() -> Router:
    """``ASSETS_PATH`` serving the vendored files (cacheable: their names do not change within a version)."""
    return create_static_files_router(
        path=ASSETS_PATH, directories=[ASSETS], include_in_schema=False, name="docs-assets", cache_control=None
    )
