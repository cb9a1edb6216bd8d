"""Reading a Prometheus scrape in tests."""

from __future__ import annotations

import re


def sample(scrape: str, name: str, **labels: str) -> float:
    """The value of one sample of ``scrape`` (0 when absent)."""
    for line in scrape.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name) : line.rindex("}") + 1]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
