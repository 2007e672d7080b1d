"""Print a table of several eval runs side by side.

    python -m evals.compare results/eval-full results/eval-must-off results/eval-aux-off
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from evals.report import table


def main(argv: list[str] | None = None) -> int:
    dirs = [Path(a) for a in (argv if argv is not None else sys.argv[1:])]
    if not dirs:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    systems = {}
    for d in dirs:
        path = d / "metrics.json"
        if not path.is_file():
            print(f"error: {path}: no such file (not an eval run directory)", file=sys.stderr)
            return 2
        metrics = json.loads(path.read_text())
        for name, per_metric in metrics["systems"].items():
            systems[f"{d.name}: {name}"] = per_metric
    print(table(systems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
