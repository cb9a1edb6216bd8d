"""What a grant token allows: one credential, and optionally fewer methods and path prefixes than its proxy."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GrantScope:
    """The grant a request was authenticated with (a use is counted only once the request passed these limits)."""

    id: str
    credential_id: str
    methods: tuple[str, ...] | None
    """None: the credential's own allowed methods."""
    path_prefixes: tuple[str, ...] | None
    """None: the credential's own allowed prefixes."""
