"""Evaluate an assessor on a phantom split or an annotated folder, with baselines and ablations.

    python -m evals.run --model models/cas-iqa-tiny --data data/phantom --split test --out results/eval
    python -m evals.run --config evals/configs/phantom-test.yaml
    python -m evals.run ... --ablations must-off=runs/must-off,aux-off=runs/aux-off@none --baselines brisque,cnn

Writes results.jsonl (one line per row: raw output, schema validity and error, ground truth,
latency; a rerun skips finished rows), metrics.json (SRCC/KRCC/PLCC/RMSE with bootstrap 95 %
intervals, level accuracy, schema-valid rate, latency) and report.md with plots.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import ValidationError
from tqdm import tqdm

from casiqa.data.rows import failure_list, grey_image, load_rows
from casiqa.inputs import AssessInput
from casiqa.metrics import METRICS
from casiqa.schema import Assessment
from evals.results import ResultsWriter, read_done
from evals.scoring import by_failure_kind, confusion, damage_separation, evidence_hits, explanation_kinds, latency, metric_table


@dataclass
class EvalConfig:
    model: str = field(default="", metadata={"help": "model directory (default: the shipped model)"})
    data: str = "data/phantom"
    split: str = "test"
    out: str = "results/eval"
    generate: bool = field(default=True, metadata={"help": "full JSON with explanations (False: heads only)"})
    aux: Literal["all", "none"] = "all"
    batch_size: int = 8
    max_samples: int = 0
    baselines: str = field(default="brisque,cnn", metadata={"help": "comma list of brisque, cnn; empty for none"})
    ablations: str = field(default="", metadata={
        "help": "name=model_dir[@none],... scored heads-only on the same rows (@none: without aux images)"})
    no_reference: bool = field(default=True, metadata={"help": "also score the model without auxiliary images"})
    bootstrap: int = 1000
    seed: int = 0


def to_input(row: dict, aux: str) -> AssessInput:
    get = (lambda k: grey_image(row.get(k))) if aux == "all" else (lambda k: None)
    return AssessInput(grey_image(row["synthetic"]), live=get("live"), reference=get("reference"), name=str(row["id"]))


def truth_of(row: dict) -> dict[str, float]:
    return {m: float(row["scores"][m]["mos"]) for m in METRICS}


def validate(raw: str) -> tuple[dict | None, str | None]:
    """(parsed assessment, None) or (None, the validation error) for one raw output."""
    try:
        return Assessment.model_validate_json(raw).model_dump(mode="json"), None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "output"
        return None, f"{where}: {first['msg']} ({e.error_count()} error(s))"


def evaluate_model(assessor, rows, cfg: EvalConfig, out: Path) -> dict[str, dict]:
    """Run the assessor on every row not yet in results.jsonl; returns all rows' results."""
    path = out / "results.jsonl"
    done = read_done(path)
    todo = [r for r in rows if str(r["id"]) not in done]
    heads: dict[str, object] = {}
    if cfg.generate and todo:
        # rows that share the heads' level combination share a compiled grammar (a few hundred MB
        # each, so the assessor keeps only a few): assess them together, reusing these heads
        try:
            found = assessor.heads([to_input(x, cfg.aux) for x in todo])
            heads = {str(r["id"]): h for r, h in zip(todo, found, strict=True)}
            todo = sorted(todo, key=lambda r: heads[str(r["id"])].levels)  # stable: ties keep their order
        except Exception:  # a bad row: keep the order; its batch records the error below
            heads = {}
    writer = ResultsWriter(path)
    try:
        for start in tqdm(range(0, len(todo), cfg.batch_size), desc=f"assess ({len(done)} done)", unit="batch"):
            chunk = todo[start : start + cfg.batch_size]
            t0 = time.perf_counter()
            try:
                known = [heads.get(str(x["id"])) for x in chunk]
                reuse = {"heads": known} if all(known) else {}
                reports = assessor.assess([to_input(x, cfg.aux) for x in chunk], generate=cfg.generate, **reuse)
                outputs = [r.model_dump_json() for r in reports]
                failure = None
            except Exception as e:  # a failed batch is recorded row by row, the run goes on
                outputs, failure = [None] * len(chunk), f"{type(e).__name__}: {e}"
            per_row = (time.perf_counter() - t0) / len(chunk)
            for row, raw in zip(chunk, outputs, strict=True):
                parsed, error = validate(raw) if raw is not None else (None, failure)
                result = {"id": str(row["id"]), "raw": raw, "valid": parsed is not None, "error": error,
                          "truth": truth_of(row), "latency_s": round(per_row, 4),
                          "pred": {m: parsed["metrics"][m]["score"] for m in METRICS} if parsed else None,
                          "levels": {m: parsed["metrics"][m]["level"] for m in METRICS} if parsed else None}
                writer.write(result)
                done[result["id"]] = result
    finally:
        writer.close()
    return done


def weights_fingerprint(model_dir: str) -> str:
    """Which model a directory holds now: its weights (file names, sizes, modification times: a
    retrained model in the same directory gets another fingerprint, cheap for any model size) and
    a hash of its config.json (a setting that changes the scores, e.g. dihedral_scores, does too)."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    weights = ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files) or "no weights"
    config = Path(model_dir) / "config.json"
    return weights + (f";config:{hashlib.sha256(config.read_bytes()).hexdigest()[:16]}" if config.is_file() else "")


def check_run_identity(out: Path, identity: dict) -> None:
    """A rerun into `out` resumes only the same run (same weights, data, split, mode): results of
    another model or set-up are never mixed into it."""
    path = out / "run.json"
    if (out / "results.jsonl").is_file():
        previous = json.loads(path.read_text()) if path.is_file() else None
        if previous != identity:
            changed = sorted(k for k in identity if previous is None or previous.get(k) != identity[k])
            raise SystemExit(f"error: {out} holds a run with other {', '.join(changed) or 'settings'}; "
                             "use a new --out (or delete it) to evaluate this one")
    path.write_text(json.dumps(identity, indent=2))


def side_predictions(name: str, rows, out: Path, compute, source: str = "") -> np.ndarray:
    """Predictions [N, M] of a baseline or ablation, cached in side/NAME.json (resume: reused
    only for the same rows and the same source, e.g. the same ablation weights)."""
    path = out / "side" / f"{name}.json"
    ids = [str(r["id"]) for r in rows]
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("ids") == ids and cached.get("source", "") == source:
            return np.array(cached["pred"])
    pred = np.asarray(compute(), dtype=float)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"ids": ids, "source": source, "pred": pred.tolist()}))
    return pred


def heads_only(model_dir: str, rows, aux: str, batch_size: int) -> np.ndarray:
    from casiqa.assessor import Assessor

    assessor = Assessor.load(model_dir, batch_size=batch_size)
    preds = []
    for start in tqdm(range(0, len(rows), batch_size), desc=f"heads {Path(model_dir).name} aux={aux}", unit="batch"):
        heads = assessor.heads([to_input(r, aux) for r in rows[start : start + batch_size]])
        preds.extend([[h.score[m] for m in METRICS] for h in heads])
    return np.array(preds)


def _ablation(item: str, default_aux: str) -> tuple[str, str, str]:
    """'name=model_dir' or 'name=model_dir@none' (scored without auxiliary images, e.g. a model
    trained without them) -> (name, model_dir, aux mode)."""
    name, _, rest = item.partition("=")
    path, _, aux = rest.partition("@")
    aux = aux or default_aux
    if not name or not (Path(path) / "config.json").is_file() or aux not in ("all", "none"):
        raise SystemExit(f"error: ablation {item!r}: expected name=model_dir[@all|@none] with a model in model_dir")
    return name, path, aux


def main(argv: list[str] | None = None) -> int:
    from casiqa.assessor import Assessor
    from casiqa.cli import parse_config
    from casiqa.paths import DEFAULT_MODEL
    from evals import baselines as bl
    from evals.report import write_report

    (cfg,) = parse_config((EvalConfig,), argv, description=__doc__.splitlines()[0])
    model_dir = cfg.model or str(DEFAULT_MODEL)
    ablations = [_ablation(item, cfg.aux) for item in filter(None, cfg.ablations.split(","))]  # checked up front
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    check_run_identity(out, {"model": str(Path(model_dir).resolve()), "weights": weights_fingerprint(model_dir),
                             "data": str(Path(cfg.data).resolve()), "split": cfg.split, "aux": cfg.aux,
                             "generate": cfg.generate, "max_samples": cfg.max_samples})
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    rows = load_rows(cfg.data, cfg.split)
    rows = [rows[i] for i in range(len(rows) if not cfg.max_samples else min(cfg.max_samples, len(rows)))]
    t0 = time.perf_counter()
    results = evaluate_model(Assessor.load(model_dir, batch_size=cfg.batch_size), rows, cfg, out)
    ordered = [results[str(r["id"])] for r in rows]
    valid = [r for r in ordered if r["valid"]]
    truth_all = np.array([[r["truth"][m] for m in METRICS] for r in ordered])
    systems = {}
    if valid:
        systems["CAS-IQA"] = (np.array([[r["pred"][m] for m in METRICS] for r in valid]),
                              np.array([[r["truth"][m] for m in METRICS] for r in valid]))
    side, sources = {}, {}
    if cfg.no_reference and cfg.aux == "all":
        side["CAS-IQA, no reference (heads)"] = lambda: heads_only(model_dir, rows, "none", cfg.batch_size)
        sources["CAS-IQA, no reference (heads)"] = weights_fingerprint(model_dir)
    for name, path, aux in ablations:
        side[f"ablation {name} (heads)"] = lambda p=path, a=aux: heads_only(p, rows, a, cfg.batch_size)
        sources[f"ablation {name} (heads)"] = f"{aux}:{weights_fingerprint(path)}"
    needs_train = [b for b in filter(None, cfg.baselines.split(","))]
    train = load_rows(cfg.data, "train") if needs_train else None
    for b in needs_train:
        if b == "brisque":
            side["BRISQUE + kernel ridge"] = lambda: bl.brisque_baseline(train, rows, progress=_bar)
        elif b == "cnn":
            side["small CNN (no LM)"] = lambda: bl.cnn_baseline(train, rows, use_aux=cfg.aux == "all", progress=_bar)
        else:
            raise SystemExit(f"error: unknown baseline {b!r} (brisque, cnn)")
    for name, compute in side.items():
        source = sources.get(name, f"{cfg.aux}:{Path(cfg.data).resolve()}:seed{cfg.seed}")
        systems[name] = (side_predictions(_slug(name), rows, out, compute, source), truth_all)
    metrics = {
        "model": model_dir, "data": cfg.data, "split": cfg.split, "n_rows": len(ordered),
        "schema_valid_rate": round(len(valid) / max(len(ordered), 1), 4),
        "invalid": [{"id": r["id"], "error": r["error"]} for r in ordered if not r["valid"]][:20],
        "latency": latency([r["latency_s"] for r in ordered]),
        "systems": {name: metric_table(p, t, cfg.bootstrap if name == "CAS-IQA" else 0, cfg.seed)
                    for name, (p, t) in systems.items()},
        "confusion": {m: confusion(systems["CAS-IQA"][0][:, j], systems["CAS-IQA"][1][:, j])
                      for j, m in enumerate(METRICS)} if "CAS-IQA" in systems else {},
        "wall_time_s": round(time.perf_counter() - t0, 1),
    }
    if valid:
        failures = [failure_list(r) for r, res in zip(rows, ordered, strict=True) if res["valid"]]
        metrics["by_failure_kind"] = by_failure_kind(failures, *systems["CAS-IQA"])
        if any(f is not None for f in failures):  # do the evidence boxes find the failures?
            evidence = [{m: v["evidence"] for m, v in validate(r["raw"])[0]["metrics"].items()} for r in valid]
            metrics["evidence_boxes"] = evidence_hits(failures, evidence, cfg.seed)
            separation = damage_separation(failures, evidence)
            if separation:
                metrics["evidence_damage"] = separation
        if cfg.generate and any(f is not None for f in failures):  # do the explanations name the rows' failures?
            answers = [validate(r["raw"])[0]["metrics"] for r in valid]
            explanations = [{m: v["explanation"] for m, v in a.items()} for a in answers]
            levels = [{m: v["level"] for m, v in a.items()} for a in answers]
            facts = [r.get("facts") or None for r, res in zip(rows, ordered, strict=True) if res["valid"]]
            metrics["explanation_kinds"] = explanation_kinds(failures, explanations, levels,
                                                             facts if any(facts) else None)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_report(out, metrics, systems)
    print((out / "report.md").read_text().split("## Plots")[0])
    return 0


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def _bar(iterable, desc):
    return tqdm(iterable, desc=desc)


if __name__ == "__main__":
    sys.exit(main())
