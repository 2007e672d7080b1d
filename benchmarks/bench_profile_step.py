"""One stage-1p training step of the profile scorer, fp32 against bf16 autocast: what a bf16 stage 1p
would save, before training with it.

    python -m benchmarks.bench_profile_step
    python -m benchmarks.bench_profile_step --batch 32 --points 128 --steps 20 --rounds 2

A fresh ProfileScorer with the tiny-cpu recipe's profile settings (+-12 px, 33 samples, across
and along, centre lines) takes forward (with the per-point features the point loss reads),
backward and an AdamW step on random profiles of the shapes stage 1p trains on (a batch of 32
images, 128 of each structure's points). Rounds alternate fp32 and bf16 so a machine's drift
hits both; prints the median ms per step of each and their ratio. Speed only: whether bf16
trains the scorer as well is a question for a full run (stage 1p's validation SRCC).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from casiqa.metrics import METRICS
from casiqa.model.profiles import PROFILE_PLANES, ProfileScorer


def step_time(scorer: ProfileScorer, profiles: torch.Tensor, valid: torch.Tensor, opt, bf16: bool, steps: int) -> float:
    """Mean seconds per training step (after two warm-up steps)."""
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, features = scorer(profiles, valid, per_point=True)
        loss = logits.float().logsumexp(-1).mean() + features.float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--points", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    scorer = ProfileScorer(tuple(METRICS), 5, half_px=12.0, samples=33, along=True, centre=True)
    channels = len(PROFILE_PLANES) * (2 if scorer.along else 1)     # across, then along the structure
    profiles = torch.randn(args.batch, len(scorer.scored), args.points, channels, scorer.samples)
    valid = torch.ones(profiles.shape[:3], dtype=torch.bool)
    opt = torch.optim.AdamW(scorer.parameters(), 1e-3)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(args.rounds):
        for name in times:
            times[name].append(step_time(scorer, profiles, valid, opt, name == "bf16", args.steps))
    fp32, bf16 = (statistics.median(times[k]) * 1000 for k in ("fp32", "bf16"))
    print(f"profiles {tuple(profiles.shape)}, {args.rounds} rounds of {args.steps} steps, {torch.get_num_threads()} threads")
    print(f"fp32 {fp32:.1f} ms/step, bf16 autocast {bf16:.1f} ms/step: {fp32 / bf16:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
