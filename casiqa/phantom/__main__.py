"""Build the synthetic angiography phantom data set (CAS-Sim).

    python -m casiqa.phantom --n 3565 --seed 0 --out data/phantom              # Hugging Face DatasetDict
    python -m casiqa.phantom --n 200 --out data/phantom-folder --format folder  # PNGs + annotations.jsonl
    python -m casiqa.phantom --config casiqa/phantom/recipes/cas3k.yaml --bit_depth 16

Load the DatasetDict with `datasets.load_from_disk(DIR)`; read a folder with
`casiqa.data.folder.read_folder(DIR)`.
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str] | None = None) -> int:
    from casiqa.cli import parse_config
    from casiqa.phantom.build import BuildConfig, build
    from casiqa.phantom.config import PhantomConfig

    cfg, build_cfg = parse_config((PhantomConfig, BuildConfig), argv, description=__doc__.splitlines()[0])
    start = time.perf_counter()
    counts = build(cfg, build_cfg)
    took = time.perf_counter() - start
    total = sum(counts.values())
    print(f"wrote {total} cases ({', '.join(f'{k} {v}' for k, v in counts.items())}) to {build_cfg.out} "
          f"in {took:.1f} s ({total / took:.1f} cases/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
