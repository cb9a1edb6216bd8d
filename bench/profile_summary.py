"""Summarize a py-spy ``--format raw`` profile (collapsed stacks): where the service's time goes.

python -m bench.profile_summary bench/results/run-*/profile-get.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def summarize(path: str, top: int = 25) -> dict[str, list[tuple[str, float]]]:
    total = 0
    threads = 0
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in open(path):
        stack, _, count = line.rstrip().rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [_name(f) for f in stack.split(";") if f]
        if not frames or (frames[0].startswith(("process ", "thread ")) and len(frames) == 1):
            continue
        # Samples of the Vault worker threads (hvac) are not the event loop's: leave them out.
        if any(f.startswith("_worker (concurrent/futures/thread.py") for f in frames):
            threads += n
            continue
        total += n
        self_time[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    pct = lambda c: [(k, round(100 * v / total, 1)) for k, v in c.most_common(top)]  # noqa: E731
    return {
        "samples": [("event loop thread", total), ("vault worker threads", threads)],
        "self": pct(self_time),
        "inclusive": pct(inclusive),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    result = summarize(args.path, args.top)
    for section, rows in result.items():
        print(f"== {section}")
        for name, value in rows:
            print(f"{value:>7}  {name}")


if __name__ == "__main__":
    main()
