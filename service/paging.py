"""The one rule every listing's ``skip`` obeys beyond its declared ``ge=0``."""

from __future__ import annotations

from service.errors import RequestInvalid

MAX_SKIP = 2**63 - 1


def check_skip(skip: int) -> None:
    """Postgres' OFFSET is a bigint: a larger ``skip`` is a 422, not a 500. Checked by each listing rather than as a
    ``le`` on the parameter, which would change the published schema of Mielto's list operations."""
    if skip > MAX_SKIP:
        raise RequestInvalid.at(
            ["query", "skip"], f"Input should be less than or equal to {MAX_SKIP}", "less_than_equal"
        )
