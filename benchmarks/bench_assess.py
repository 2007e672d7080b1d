"""Assessor latency and throughput on this machine (CPU) or a GPU (bf16), in one run.

    python -m benchmarks.bench_assess                       # tiny model, built untrained if --model is absent
    python -m benchmarks.bench_assess --model models/cas-iqa-tiny --repeats 20
    python -m benchmarks.bench_assess --arch qwen2.5-vl-3b --device cuda   # that architecture, random weights

Prints median latency per image (scores only / full JSON, without and with both auxiliary
images), batch throughput, the one-off grammar compile time and, on CUDA, peak memory.
Medians of --repeats runs after one warm-up; compare only figures from the same run.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class BenchConfig:
    model: str = field(default="", metadata={"help": "model directory; empty: a tiny untrained model"})
    arch: str = field(default="tiny", metadata={"help": "tiny, or a published architecture with random weights "
                                                        "(casiqa.model.loading.ARCHITECTURES)"})
    device: str = ""
    repeats: int = 10
    batch: int = 8
    image_size: int = 512


def build(cfg: BenchConfig):
    import torch

    from casiqa.assessor import Assessor, default_device
    from casiqa.model.loading import build_tiny, from_architecture

    device, dtype = default_device()
    device = cfg.device or device
    if cfg.model:
        assessor = Assessor.load(cfg.model, batch_size=cfg.batch)
        return assessor, f"{cfg.model}"
    if cfg.arch == "tiny":
        model, processor = build_tiny()
    else:
        model, processor = from_architecture(cfg.arch, dtype=dtype if device == "cuda" else torch.float32, device=device)
    model = model.to(dtype=dtype if device == "cuda" else torch.float32)
    return Assessor(model, processor, model_id=f"untrained-{cfg.arch}", batch_size=cfg.batch, device=device), cfg.arch


def cases(n: int, size: int, seed: int = 0):
    from casiqa.inputs import AssessInput
    from casiqa.phantom.case import anatomy_cases
    from casiqa.phantom.config import PhantomConfig

    out, cfg, a = [], PhantomConfig(size=size), 0
    while len(out) < n:
        for c in anatomy_cases(seed, a, cfg):
            grey = {k: c.images[k].astype(np.float32) / 255.0 for k in ("synthetic", "live", "reference")}
            out.append(AssessInput(grey["synthetic"], grey["live"], grey["reference"], name=c.id))
        a += 1
    return out[:n]


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (grammar compile, allocator)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _rss_mb() -> float:
    """Resident memory of this process in MB (Linux; 0 elsewhere)."""
    try:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def main(argv: list[str] | None = None) -> int:
    import torch

    from casiqa.cli import parse_config
    from casiqa.inputs import AssessInput

    (cfg,) = parse_config((BenchConfig,), argv, description=__doc__.splitlines()[0])
    assessor, name = build(cfg)
    data = cases(max(cfg.batch, 2), cfg.image_size)
    bare = [AssessInput(d.target, name=d.name) for d in data]
    if assessor.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    levels = assessor.heads(bare[:1])[0].levels
    rss0, t = _rss_mb(), time.perf_counter()
    assessor._generator(levels)
    compile_s, grammar_mb = time.perf_counter() - t, _rss_mb() - rss0
    rows = []
    for label, batch in (("no aux", bare), ("live + reference", data)):
        rows.append((f"scores only, {label}", timed(lambda b=batch: assessor.assess(b[:1], generate=False), cfg.repeats)))
        full = timed(lambda b=batch: assessor.assess(b[:1], generate=True), max(cfg.repeats // 3, 2))
        rows.append((f"full JSON, {label}", full))
    through_scores = cfg.batch / timed(lambda: assessor.assess(data[: cfg.batch], generate=False), max(cfg.repeats // 2, 2))
    through_full = cfg.batch / timed(lambda: assessor.assess(data[: cfg.batch], generate=True), 2)
    params = sum(p.numel() for p in assessor.model.parameters())
    print(f"model {name}: {params / 1e6:.1f} M parameters on {assessor.device} ({next(assessor.model.parameters()).dtype}), "
          f"{cfg.image_size} px phantom images, torch threads {torch.get_num_threads()}")
    print(f"grammar compile (once per level combination, {assessor.grammar_cache} kept): {compile_s:.2f} s, "
          f"+{grammar_mb:.0f} MB resident")
    print("| case | median latency per image |\n|---|---|")
    for label, sec in rows:
        print(f"| {label} | {sec * 1000:.0f} ms |")
    print(f"| batch of {cfg.batch}, scores only, live + reference | {through_scores:.1f} images/s |")
    print(f"| batch of {cfg.batch}, full JSON, live + reference | {through_full:.2f} images/s |")
    if assessor.device == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
