"""Which upstream path a proxied request names, refusing anything that could leave the allowed prefixes.

The path is taken from the request as the client sent it (ASGI ``raw_path``, still percent-encoded), never from a
decoded or normalized form, so what is checked is byte for byte what the upstream receives. Refused: dot segments
(``.``, ``..``) in any encoding, encoded slashes and backslashes, ``//`` (which upstreams and libraries read as a
new authority), backslashes, NUL, double encoding, and any character outside RFC 3986's path characters.
"""

from __future__ import annotations

import re

from service.errors import BadRequest, Forbidden

_PATH_CHARS = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@/%-]*$")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Encoded '.', '/', '\', NUL and '%' (double encoding): none has a legitimate use in an API path we proxy.
_ENCODED_FORBIDDEN = re.compile(r"%(2[eEfF]|5[cC]|00|25)")
_QUERY_CHARS = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@/?%-]*$")
_ID_LIKE = re.compile(r"\d|%")
_VERSION = re.compile(r"^v\d{1,3}(\.\d{1,3})?$")  # /v1/, /v2.1/: API versions, kept as they are


class PathRefused(BadRequest):
    """The requested path could escape the allowed prefixes (or is malformed); nothing was sent upstream."""


def upstream_path(raw_path: str, route_prefix: str) -> str:
    """The path after ``route_prefix`` (``/api/v1/proxy/<id>``) in ``raw_path``, checked (``PathRefused``)."""
    if not raw_path.startswith(route_prefix + "/"):
        raise PathRefused("The proxied path must follow /api/v1/proxy/{credential_id}/ literally")
    path = raw_path[len(route_prefix) :]
    if not _PATH_CHARS.match(path) or _PERCENT.search(path):
        raise PathRefused("The proxied path holds characters that are not allowed (backslash, space, control, bad %)")
    if _ENCODED_FORBIDDEN.search(path):
        raise PathRefused("The proxied path holds an encoded '.', '/', '\\', NUL or '%'")
    if "//" in path:
        raise PathRefused("The proxied path holds '//'")
    if any(segment in {".", ".."} for segment in path.split("/")):
        raise PathRefused("The proxied path holds a '.' or '..' segment")
    return path


def check_query(raw_query: str) -> str:
    if not _QUERY_CHARS.match(raw_query) or _PERCENT.search(raw_query):
        raise PathRefused("The query string holds characters that are not allowed")
    return raw_query


def within(path: str, prefixes: list[str] | tuple[str, ...]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or below one of them (at a segment boundary)."""
    for prefix in prefixes:
        base = prefix.rstrip("/")
        if base in {"", path} or path.startswith(base + "/"):
            return True
    return False


def require_within(path: str, prefixes: list[str] | tuple[str, ...], whose: str) -> None:
    if not within(path, prefixes):
        raise Forbidden(f"The path is outside the {whose} allowed path prefixes")


def template(path: str) -> str:
    """The path for the usage record: id-like segments (digits, encodings, long tokens) become ``{id}``, so no
    identifier or token a caller put in a path is kept."""
    parts = [
        "{id}" if (_ID_LIKE.search(part) and not _VERSION.match(part)) or len(part) > 32 else part
        for part in path.split("/")
    ]
    return "/".join(parts)[:512]
