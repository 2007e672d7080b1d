"""results.jsonl: one line per evaluated row, appended as rows finish, safe to resume."""

from __future__ import annotations

import json
from pathlib import Path


def read_done(path: Path) -> dict[str, dict]:
    """Rows already written. A line cut off by a killed run is dropped (and the file truncated
    to its last complete line) so that the row is evaluated again, not lost or duplicated."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        path.write_bytes(keep)
    done = {}
    for line in keep.decode("utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            done[row["id"]] = row
    return done


class ResultsWriter:
    def __init__(self, path: Path):
        self.fh = path.open("a", encoding="utf-8")

    def write(self, row: dict) -> None:
        self.fh.write(json.dumps(row, sort_keys=True) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()
