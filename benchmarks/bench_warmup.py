"""Stage 1 of a recipe alone (the pixel warm-up): validation SRCC and seconds per epoch.

    python -m benchmarks.bench_warmup --config finetune/recipes/tiny-cpu.yaml --pixel_warmup_epochs 6
    python -m benchmarks.bench_warmup --config finetune/recipes/tiny-cpu.yaml --pixel_compare 3 9 17 \\
        --cache /tmp/pixels-224.pt --json_out warmup.json
    python -m benchmarks.bench_warmup --config finetune/recipes/tiny-cpu.yaml --seeds 0 1 2 --cache /tmp/pixels-224.pt
    python -m benchmarks.bench_warmup --config finetune/recipes/tiny-cpu.yaml --fine_tophat_px 448 --seeds 0 1

For trying a change to MUST's quality path (its stem, its input planes, the warm-up's losses) in
minutes rather than a full training: the same data, model, pixel cache and warm-up as stage 1 of
`finetune.sft`, and no SFT. Takes every `finetune.sft` argument. `--cache FILE` keeps the pixel
cache (the training and validation rows as the processor makes them, with their derived planes
and damage maps) in FILE and reuses it while the settings that shaped it are the same (it does
not depend on the stem's width or the warm-up's own settings, so probes of those share one).
Prints each epoch's loss, validation SRCC per metric and seconds (validation included), then, per
failure kind, the Spearman correlation of the failure's severity with the score on the validation
rows and on the training rows (`evals.scoring.by_failure_kind`: a metric's SRCC can hold still while
one kind is learnt and another lost, and a kind graded poorly on the rows the probe trained on is
not learnt at all, which no amount of data fixes; scoring the 2,853 training rows for it adds
~40 s on 2 CPU cores). With a dense head (pixel_dense), it also prints how well the dense damage
maps read each metric on both splits (`evals.scoring.dense_map_fit`): the Spearman correlation of
the predicted map's maximum with the MOS beside that of the target map's (what a perfect map would
carry), whether the map grades severity on the damaged cells, and its false alarms on undamaged
rows (~45 s more on 2 CPU cores). --json_out writes them with the settings and the device.
`--seeds A B ...` runs the probe once per seed on one pixel cache and ends with each metric's final
SRCC over the seeds (mean, standard deviation, range): the recipe's seeds alone spread the guidewire
by 0.09 at full length, so one run cannot judge a change smaller than that. On an H200, with the metric heads
still run per sample, seven probes sharing its host's 16 cores took 45-52 s per epoch each,
about what one run takes on 2 CPU cores (not profiled); the heads are now batched (~50 s per
epoch on 2 CPU cores, was ~58), and one probe alone on an H200 took 7.8-10 s per epoch
(2026-11-26; each batch is still built on the host).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# the settings a pixel cache depends on (finetune.warmup.pixel_rows)
CACHE_FIELDS = ("data", "max_train_samples", "eval_max_samples", "image_size", "use_aux", "pixel_tophat",
                "pixel_tophat_margin",
                "pixel_compare", "pixel_warmup_dense_weight")


def cached_rows(args, model_name: str, processor, pixels, path: Path | None, fine: tuple[int, int] | None = None,
                processed_px: int = 0, tophat_px: int = 0):
    """(train, validation) PixelRows, from `path` when it was made with these settings; with `fine`
    = (px, top-hat px), the top-hat planes from the images processed at that finer size
    (finetune.warmup.fine_derived_planes); `processed_px`: the size `processor` makes, where it is not
    the recipe's, and `tophat_px` the top-hat window there."""
    import torch

    from casiqa.data.rows import data_fingerprint
    from casiqa.model.processor import make_processor
    from finetune.data import load_rows
    from finetune.sft import subset
    from finetune.warmup import pixel_rows

    key = {f: getattr(args, f) for f in CACHE_FIELDS}
    key["dense"] = bool(key.pop("pixel_warmup_dense_weight"))
    key["model"] = model_name  # its processor makes the pixels
    key["data_fingerprint"] = data_fingerprint(args.data)  # a build remade at the same path is other data
    if processed_px:  # `processor` makes the rows at another size than the recipe's (bench_profiles --profile_px)
        key["processed_px"], key["tophat_px"] = processed_px, tophat_px
    if fine:
        key["fine_tophat"] = list(fine)
        fine = (make_processor(processor.tokenizer, fine[0]), fine[1])
    if path is not None and path.is_file():
        saved = torch.load(path, weights_only=False)
        if saved.get("key") != key:
            raise SystemExit(f"{path} holds a pixel cache made with other settings ({saved.get('key')}, these are "
                             f"{key}): remove it or name another --cache")
        print(f"pixel cache: {path}", file=sys.stderr)
        return saved["train"], saved["validation"]
    train = subset(load_rows(args.data, "train"), args.max_train_samples)
    val = subset(load_rows(args.data, "validation"), args.eval_max_samples)
    rows = (pixel_rows(train, processor, use_aux=args.use_aux, dense=key["dense"], pixels=pixels, fine=fine,
                       tophat_px=tophat_px),
            pixel_rows(val, processor, use_aux=args.use_aux, pixels=pixels, fine=fine, tophat_px=tophat_px))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "train": rows[0], "validation": rows[1]}, path)
    return rows


def row_failures(args, split: str, limit: int) -> list:
    """The failure records of a split's rows as the pixel cache holds them (caches made before
    PixelRows kept them); only the `failures` column is read where the data set has columns."""
    from casiqa.data.rows import failure_list
    from finetune.data import load_rows
    from finetune.sft import subset

    rows = subset(load_rows(args.data, split), limit)
    if hasattr(rows, "select_columns"):  # a datasets split: no image decoding
        rows = rows.select_columns([c for c in ("id", "failures") if c in rows.column_names])
    return [failure_list(r) for r in rows]


def same_rows(rows, per_row: list) -> None:
    """What was read from the data has one entry per cached row, or the cache is stale."""
    if len(per_row) != len(rows):
        raise SystemExit(f"the pixel cache holds {len(rows)} rows but the data has {len(per_row)}: rebuild the cache")


def by_kind(must, rows, failures) -> dict:
    """Per metric and failure kind, the probe's fit (evals.scoring.by_failure_kind) of these rows."""
    from evals.scoring import by_failure_kind
    from finetune.warmup import predict

    same_rows(rows, failures)
    return by_failure_kind(failures, predict(must, rows), rows.mos)


def row_maps(args, split: str, limit: int, shape: tuple[int, int]) -> list:
    """Each row's dense damage maps on the H/4 grid of a `shape` target (None for a row without
    failure records), made from the data's masks (the pixel cache keeps the training rows' only)."""
    from finetune.data import damage_maps, load_rows
    from finetune.sft import subset

    grid = (shape[0] // 4, shape[1] // 4)
    return [damage_maps(r, grid) for r in subset(load_rows(args.data, split), limit)]


def dense_fit(must, rows, maps: list) -> dict | None:
    """evals.scoring.dense_map_fit of the probe's dense head on these rows (those with maps)."""
    import numpy as np

    from evals.scoring import dense_map_fit
    from finetune.warmup import predict_maps

    same_rows(rows, maps)
    keep = [i for i, m in enumerate(maps) if m is not None]
    if must.pixels.dense is None or not keep:
        return None
    pred = predict_maps(must, rows)[keep]
    return dense_map_fit(pred, np.stack([np.asarray(maps[i], np.float32) for i in keep]), rows.mos[keep])


def dense_lines(fit: dict) -> list[str]:
    """'metric: ...' lines of dense_fit on validation and training rows."""
    def f(v) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = ["Dense damage maps, validation / training rows: Spearman(-max of the map, MOS) predicted [target map's], "
             "predicted severity on damaged cells, mean max on undamaged rows:"]
    val, train = fit["validation"], fit["train"]
    for m in val:
        a, b = val[m], train.get(m, {})
        lines.append(f"  {m}: max {f(a['pred_max_srcc'])} / {f(b.get('pred_max_srcc'))} "
                     f"[{f(a['true_max_srcc'])} / {f(b.get('true_max_srcc'))}], damaged cells {f(a['damaged_srcc'])} / "
                     f"{f(b.get('damaged_srcc'))}, undamaged max {f(a['clean_max'])} / {f(b.get('clean_max'))}")
    return lines


def kind_lines(kinds: dict) -> list[str]:
    """'metric: kind validation / training, ...' lines of Spearman(severity, score)."""
    def r(table: dict, kind: str) -> str:
        v = table.get(kind, {}).get("srcc_severity")
        return "-" if v is None else f"{v:.2f}"

    val, train = kinds["validation"], kinds["train"]
    lines = ["Spearman(severity, score) by failure kind, validation / training rows (strongly negative is right):"]
    for m in val:
        names = [k for k in dict.fromkeys([*val[m], *train.get(m, {})]) if k not in ("none", "several")]
        lines.append(f"  {m}: " + ", ".join(f"{k} {r(val[m], k)} / {r(train.get(m, {}), k)}" for k in names))
    return lines


def run(argv: list[str], cache: Path | None = None, fine: tuple[int, int] | None = None) -> dict:
    import torch

    from finetune.sft import build_model, parse, warmup_config
    from finetune.warmup import warm_up

    with tempfile.TemporaryDirectory() as tmp:
        given = {a.split("=", 1)[0] for a in argv}
        args, training_args, model_args = parse(argv + ([] if "--output_dir" in given else ["--output_dir", tmp]))
        if not args.pixel_warmup_epochs:
            raise SystemExit("the recipe has no pixel warm-up: pass --pixel_warmup_epochs N")
        model, processor = build_model(args, model_args, training_args)
        pixels = getattr(model.model.must, "pixels", None)
        if pixels is None:
            raise SystemExit("stage 1 needs MUST with its pixel path (must: true, pixel_path: true)")
        if fine and (not pixels.tophat or pixels.compare):
            raise SystemExit("--fine_tophat_px computes the top-hat planes at a finer size: the recipe needs "
                             "pixel_tophat, and no pixel_compare (its windows are sized for the model's pixels)")
        start = time.perf_counter()
        train, val = cached_rows(args, model_args.model_name_or_path or "tiny", processor, pixels, cache, fine)
        cache_s = time.perf_counter() - start
        for name, rows, limit in (("validation", val, args.eval_max_samples), ("train", train, args.max_train_samples)):
            if rows.failures is None:  # a cache made before PixelRows kept them: the findings heads need them too
                rows.failures = row_failures(args, name, limit)
                same_rows(rows, rows.failures)
        cfg = warmup_config(args, training_args)
        clock = [time.perf_counter()]

        def log(entry):
            now = time.perf_counter()
            entry["seconds"] = round(now - clock[0], 2)
            clock[0] = now
            print(json.dumps(entry), flush=True)

        history = warm_up(model, train, val, cfg, log=log)
        must = model.model.must
        kinds = {name: by_kind(must, rows, rows.failures) for name, rows in (("validation", val), ("train", train))}
        dense = None
        if pixels.dense is not None and train.damage is not None:
            fits = {"validation": dense_fit(must, val, row_maps(args, "validation", args.eval_max_samples,
                                                                tuple(val.target[0].shape))),
                    "train": dense_fit(must, train, train.damage)}
            dense = fits if all(fits.values()) else None
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    settings = {k: v for k, v in vars(args).items() if k.startswith(("pixel", "image_size", "pool", "aux"))}
    if fine:
        settings["fine_tophat"] = {"px": fine[0], "size": fine[1]}
    return {"settings": json.loads(json.dumps(settings, default=str)), "device": device, "train_rows": len(train),
            "validation_rows": len(val), "cache_s": round(cache_s, 1),
            "pixel_path_params": sum(p.numel() for p in pixels.parameters()), "history": history,
            "by_failure_kind": kinds, "dense_maps": dense}


def final_srcc(result: dict) -> dict[str, float]:
    """metric -> the last epoch's validation SRCC of one probe."""
    return {k.removeprefix("val_").removesuffix("_srcc"): v for k, v in result["history"][-1].items()
            if k.startswith("val_") and k.endswith("_srcc")}


def seed_summary(finals: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per metric, the final validation SRCC over seeds: mean, sample standard deviation (0 for one
    seed), lowest and highest."""
    import numpy as np

    out = {}
    for m in finals[0]:
        v = np.array([f[m] for f in finals])
        out[m] = {"mean": round(float(v.mean()), 4), "std": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4),
                  "min": round(float(v.min()), 4), "max": round(float(v.max()), 4)}
    return out


def report(result: dict) -> None:
    """One probe's summary: speed and final SRCC, then its fit by failure kind and its dense maps."""
    history = result["history"]
    print(f"{result['device']}: {len(history)} epochs, median "
          f"{sorted(e['seconds'] for e in history)[len(history) // 2]} s per epoch; final "
          + ", ".join(f"{m} {v:.3f}" for m, v in final_srcc(result).items()))
    print("\n".join(kind_lines(result["by_failure_kind"])))
    if result["dense_maps"]:
        print("\n".join(dense_lines(result["dense_maps"])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False,  # --seed is not --seeds
                                     epilog="Every other flag is a finetune.sft argument (e.g. --config).")
    parser.add_argument("--cache", type=Path, help="pixel cache file, made if absent")
    parser.add_argument("--json_out", type=Path, help="write the settings and per-epoch history here")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="run the probe once per seed (instead of --seed) and report the spread")
    parser.add_argument("--fine_tophat_px", type=int, default=0,
                        help="compute the top-hat planes from the images processed at this size (px), max-pooled "
                             "onto the model's grid (a stage-1 probe: the model cannot do this at inference yet)")
    parser.add_argument("--fine_tophat_size", type=int, default=9, help="the top-hat window there (odd, px)")
    ours, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    fine = (ours.fine_tophat_px, ours.fine_tophat_size) if ours.fine_tophat_px else None
    if fine and (fine[1] < 3 or fine[1] % 2 == 0):
        raise SystemExit(f"--fine_tophat_size must be an odd size >= 3, got {fine[1]}")
    if ours.seeds and "--seed" in {a.split("=", 1)[0] for a in rest}:
        raise SystemExit("give either --seed or --seeds, not both")
    if ours.seeds and len(set(ours.seeds)) < len(ours.seeds):
        raise SystemExit(f"--seeds repeats a seed: {ours.seeds}")
    if not ours.seeds:
        result = run(rest, ours.cache, fine)
        report(result)
    else:
        runs = []
        with tempfile.TemporaryDirectory() as tmp:  # without --cache, the seeds still share one pixel cache
            cache = ours.cache or Path(tmp) / "pixels.pt"
            for seed in ours.seeds:
                print(f"seed {seed}", flush=True)
                runs.append(run(rest + ["--seed", str(seed)], cache, fine))
                report(runs[-1])
        summary = seed_summary([final_srcc(r) for r in runs])
        print(f"final validation SRCC over seeds {ours.seeds}: " + "; ".join(
            f"{m} {v['mean']:.3f} +- {v['std']:.3f} ({v['min']:.3f}-{v['max']:.3f})" for m, v in summary.items()))
        result = {"seeds": ours.seeds, "summary": summary, "runs": runs}
    if ours.json_out:
        ours.json_out.parent.mkdir(parents=True, exist_ok=True)
        ours.json_out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
