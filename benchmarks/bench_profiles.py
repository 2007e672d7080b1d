"""Stage 1p alone: how well the profile scorer ranks its metrics from the profiles, without the heads.

    python -m benchmarks.bench_profiles --config finetune/recipes/tiny-cpu.yaml --cache /tmp/pixels-224.pt
    python -m benchmarks.bench_profiles --config finetune/recipes/tiny-cpu.yaml --cache /tmp/pixels-224.pt \\
        --profile_loss mos --profile_half_px 12 --profile_samples 49
    python -m benchmarks.bench_profiles --config finetune/recipes/tiny-cpu.yaml --cache /tmp/pixels-224.pt \\
        --against results/eval-validation/results.jsonl --json_out profiles.json

The profile scorer of casiqa/model/profiles.py (`ProfileScorer`) trained by stage 1p
(finetune/profile_warmup.py) exactly as `finetune.sft` trains it, on the rows as stage 1 of the
recipe sees them (the same pixel cache as `benchmarks.bench_warmup`), but on a fresh model with
no stage 1: for trying a change to the profiles or the scorer in ~3 minutes instead of a full
training. Prints the scorer's validation SRCC per scored metric every 5 epochs (the recipe's
`profile_epochs`, or --profile_epochs), the seconds the stage took, and per failure kind how well
the scorer's score follows the failure's severity (a cache that kept the rows' failure records).
The scorer and stage 1p are the recipe's (`--profile_loss mos`, `--profile_half_px 12`, ...);
--profile_train_points tries another number of points per image in a training batch. --profile_px 448
samples the profiles from the images processed at 448 px (their top-hat planes with a
--profile_tophat window there; scale --profile_half_px with it): whether a finer image gives the
scorer more than the model's 224 px do. With
`--against FILE` (an `evals.run` results.jsonl of the validation split, in its order), also that
model's SRCC and the SRCC of the two rank-averaged: what the profiles add to a model. --json_out
writes them, with the scorer's expected score and the MOS of every validation row.
`--check_data DIR` also scores the trained scorer once, at the end, on every row of another
phantom build (e.g. `python -m casiqa.phantom --seed 1`; its pixels cached in `--check_cache`):
the recipe's 300 validation rows give an SRCC near 0.85 a standard error of ~0.015, as large as
most changes tried, and a second build's 3,565 rows ~0.005. `--check_views 8` scores it as MUST
does at inference, its level probabilities averaged over the eight flips and rotations.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import rankdata, spearmanr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False,
                                     epilog="Every other flag is a finetune.sft argument (e.g. --config).")
    parser.add_argument("--cache", type=Path, help="pixel cache file (benchmarks.bench_warmup's), made if absent")
    parser.add_argument("--against", type=Path, help="an evals.run results.jsonl of the validation split")
    parser.add_argument("--json_out", type=Path)
    parser.add_argument("--profile_px", type=int, default=0,
                        help="sample the profiles from images processed at this size instead of the model's "
                             "(with --profile_half_px scaled to match; a probe: the model cannot do it yet)")
    parser.add_argument("--profile_tophat", type=int, default=9,
                        help="with --profile_px, the top-hat window there (odd, px)")
    parser.add_argument("--check_data", type=Path, help="another phantom build, every split of it scored at the end")
    parser.add_argument("--check_cache", type=Path, help="pixel cache file of --check_data's rows, made if absent")
    parser.add_argument("--check_views", type=int, default=1, help="views averaged when scoring --check_data (1 or 8)")
    ours, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if ours.check_views not in (1, 8):
        raise SystemExit(f"--check_views must be 1 or 8 (the image as given, or all its flips and turns), "
                         f"not {ours.check_views}")
    if ours.profile_px and (ours.profile_tophat < 3 or ours.profile_tophat % 2 == 0):
        raise SystemExit(f"--profile_tophat must be an odd size >= 3, got {ours.profile_tophat}")

    import torch

    from benchmarks.bench_warmup import cached_rows
    from evals.scoring import by_failure_kind
    from finetune.profile_warmup import profile_config, profile_rows, profile_warm_up, scorer_scores
    from finetune.sft import build_model, parse

    with tempfile.TemporaryDirectory() as tmp:
        args, training_args, model_args = parse(rest + ["--output_dir", tmp])
        if not args.profile_scores:
            raise SystemExit("the recipe has no profile scorer: pass --profile_scores true")
        model, processor = build_model(args, model_args, training_args)
        must = model.model.must
        if ours.profile_px:  # every plane at that size, the top-hat planes with a window for it
            from casiqa.model.processor import make_processor

            processor = make_processor(processor.tokenizer, ours.profile_px)
        train, val = cached_rows(args, model_args.model_name_or_path or "tiny", processor, must.pixels, ours.cache,
                                 processed_px=ours.profile_px, tophat_px=ours.profile_tophat if ours.profile_px else 0)
    start = time.perf_counter()
    history = profile_warm_up(must, train, val, profile_config(args, training_args.seed),
                              log=lambda e: print(json.dumps(e), flush=True) if len(e) > 2 else None)
    seconds = time.perf_counter() - start
    scorer = must.profile_scorer
    final = {m: history[-1][f"val_{m}_srcc"] for m in scorer.scored}
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"{device}: stage 1p in {seconds:.0f} s ({args.profile_epochs} epochs, profiles sampled included); "
          "validation SRCC from the profiles alone: " + ", ".join(f"{m} {v:.3f}" for m, v in final.items()))
    out = {"device": device, "seconds": round(seconds, 1), "history": history, "final": final,
           "settings": {"rest": rest, **{k: v for k, v in vars(ours).items() if k not in ("cache", "against", "json_out")}}}
    own = scorer_scores(scorer, *profile_rows(must, val))                              # [N, scored]
    # per validation row, in the split's order: the scorer's expected score and the MOS (for
    # comparing or combining runs afterwards, e.g. several seeds)
    out["validation_rows"] = {m: {"scorer": np.round(own[:, j], 4).tolist(),
                                  "mos": np.round(val.mos[:, scorer.metrics.index(m)], 4).tolist()}
                              for j, m in enumerate(scorer.scored)}
    if val.failures is not None:  # which failure kinds the profiles read, and which they miss
        pred = val.mos.copy()
        cols = [scorer.metrics.index(m) for m in scorer.scored]
        pred[:, cols] = own
        kinds = by_failure_kind(val.failures, pred, val.mos)
        out["by_kind"] = {m: kinds[m] for m in scorer.scored}
        for m in scorer.scored:
            print(f"{m}, severity SRCC by failure kind: " + ", ".join(
                f"{k} {v['srcc_severity']:+.2f}" for k, v in kinds[m].items() if "srcc_severity" in v))
    if ours.against:
        res = [json.loads(line) for line in ours.against.read_text().splitlines() if line.strip()]
        res = res[:len(val)]  # the recipe's eval_max_samples keeps the split's first rows
        out["against"] = {}
        for j, m in enumerate(scorer.scored):
            pred = np.array([r["pred"][m] for r in res])
            truth = np.array([r["truth"][m] for r in res])
            col = scorer.metrics.index(m)
            if len(res) != len(val) or not np.allclose(truth, val.mos[:, col], atol=1e-3):
                raise SystemExit(f"{ours.against} does not hold this validation split's rows in order")
            both = rankdata(own[:, j]) + rankdata(pred)
            out["against"][m] = {"model_srcc": float(spearmanr(pred, truth)[0]),
                                 "rank_average_srcc": float(spearmanr(both, truth)[0])}
            print(f"{m}: the model alone {out['against'][m]['model_srcc']:.3f}; rank-averaged with the profiles "
                  f"{out['against'][m]['rank_average_srcc']:.3f}")
    if ours.check_data:
        out["check"] = check_scores(must, args, processor, ours.check_data, ours.check_cache, ours.check_views)
    if ours.json_out:
        ours.json_out.write_text(json.dumps(out, indent=1, default=str))
    return 0


def check_rows(args, processor, pixels, data: Path, cache: Path | None):
    """Every row of the phantom build `data` (all its splits) as PixelRows, from `cache` if it holds them."""
    import torch

    from casiqa.data.rows import data_fingerprint
    from finetune.data import load_rows
    from finetune.warmup import pixel_rows

    key = {"data": str(data), "data_fingerprint": data_fingerprint(data), "image_size": args.image_size,
           "use_aux": args.use_aux, "pixel_tophat": args.pixel_tophat,
           "pixel_tophat_margin": args.pixel_tophat_margin, "pixel_compare": args.pixel_compare}
    if cache is not None and cache.is_file():
        saved = torch.load(cache, weights_only=False)
        if saved.get("key") != key:
            raise SystemExit(f"{cache} holds the rows of other settings ({saved.get('key')}, these are {key})")
        return saved["rows"]
    rows = [r for split in ("train", "validation", "test") for r in load_rows(str(data), split)]
    got = pixel_rows(rows, processor, use_aux=args.use_aux, pixels=pixels)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "rows": got}, cache)
    return got


def check_scores(must, args, processor, data: Path, cache: Path | None, views: int) -> dict:
    """The trained scorer's SRCC per scored metric on every row of another phantom build, with a
    bootstrap standard error (200 resamples of the rows); `views` (1 or 8) as in ProfileScorer.mix."""
    import math

    import torch

    from casiqa.model.levels import expected_score
    from casiqa.model.pixel import DIHEDRAL
    from finetune.profile_warmup import profile_rows_at

    start = time.perf_counter()
    rows = check_rows(args, processor, must.pixels, data, cache)
    scorer = must.profile_scorer
    logp = []
    for view in DIHEDRAL[:views]:
        profiles, valid, _ = profile_rows_at(must, rows, view=view)
        with torch.no_grad():
            logp.append(torch.cat([scorer(profiles[i:i + 64].float(), valid[i:i + 64]).float().log_softmax(-1)
                                   for i in range(0, len(profiles), 64)]))
    own = expected_score(torch.logsumexp(torch.stack(logp), 0) - math.log(len(logp))).numpy()
    rng = np.random.default_rng(0)
    boots = [rng.integers(0, len(rows), len(rows)) for _ in range(200)]
    out = {"rows": len(rows), "views": views}
    for j, m in enumerate(scorer.scored):
        t = rows.mos[:, scorer.metrics.index(m)]
        srcc = float(spearmanr(own[:, j], t)[0])
        se = float(np.std([spearmanr(own[b, j], t[b])[0] for b in boots]))
        out[m] = {"srcc": round(srcc, 4), "se": round(se, 4)}
    out["seconds"] = round(time.perf_counter() - start, 1)
    print(f"{data} ({len(rows)} rows, {views} view(s)): " + ", ".join(
        f"{m} {out[m]['srcc']:.3f} +- {out[m]['se']:.3f}" for m in scorer.scored), flush=True)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
