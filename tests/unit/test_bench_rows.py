"""The benchmark loads its credentials with COPY, naming every column of the credential table: a migration that
adds a column must also teach the bench's row builder about it, or `just bench` fails while loading."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from bench.backend import new_row
from db.credentials import COLUMNS


def test_the_bench_row_has_every_column_of_the_credential_table() -> None:
    row = new_row(uuid.uuid4(), "label", datetime.now(UTC))
    assert sorted(row) == sorted(COLUMNS)
