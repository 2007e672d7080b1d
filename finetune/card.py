"""Test-split agreement of a trained model's heads, and the model card that records it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from casiqa.metrics import METRICS
from casiqa.paths import ROOT


def test_metrics(model, processor, args, split: str = "test", batch_size: int = 16) -> dict:
    """SRCC / KRCC / PLCC / RMSE per metric of the heads on a split (aux images as the recipe uses them)."""
    import torch

    from casiqa.model.findings import worst_kind_accuracy
    from casiqa.model.levels import expected_score
    from casiqa.stats import agreement
    from finetune.data import Collator, load_rows
    from finetune.trainer import image_heads, unwrap

    rows = load_rows(args.data, split)
    vocab = unwrap(model).model.must.vocab
    collate = Collator(processor, use_aux=args.use_aux, train=False, vocab=vocab)
    device = next(model.parameters()).device
    model.eval()
    preds, truth, found, found_true = [], [], [], []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = [rows[i] for i in range(start, min(start + batch_size, len(rows)))]
            batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in collate(chunk).items()}
            heads = image_heads(model, batch)
            preds.append(expected_score(heads.level_logits).float().cpu().numpy())
            truth.append(np.array([[float(r["scores"][m]["mos"]) for m in METRICS] for r in chunk]))
            if vocab:
                found.append(heads.finding_logits.float().cpu())
                found_true.append(batch["finding_targets"].cpu())
    p, t = np.concatenate(preds), np.concatenate(truth)
    out = {m: {k: round(v, 4) for k, v in agreement(p[:, j], t[:, j]).items()} for j, m in enumerate(METRICS)}
    out["n"] = len(t)
    if vocab:  # what the explanations can name: the findings heads against the failure records
        out["findings"] = worst_kind_accuracy(torch.cat(found), torch.cat(found_true), vocab, METRICS)
    return out


def code_version() -> str:
    """The checked-out commit, with '+ uncommitted changes' when tracked files were edited; read when a run
    starts (code committed while it trains must not be credited with its model)."""
    def git(*cmd):
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD") or "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} + uncommitted changes" if dirty and head != "unknown" else head


def _stages(args, training_args) -> str:
    sft = f"TRL SFT, {training_args.max_steps} steps of batch {training_args.per_device_train_batch_size}, " \
          f"learning rate {training_args.learning_rate}"
    if not getattr(args, "pixel_warmup_epochs", 0) or not args.must:
        return sft + "."
    frozen = ", pixel path then frozen" if getattr(args, "freeze_pixel_path", False) else ""
    tophat = f", top-hat planes of {args.pixel_tophat} px" if getattr(args, "pixel_tophat", 0) else ""
    tophat += " (zeroed within one window of the edge)" if tophat and getattr(args, "pixel_tophat_margin", False) else ""
    compare = list(getattr(args, "pixel_compare", None) or [])
    tophat += f", device-comparison planes at {'/'.join(map(str, compare))} px" if compare else ""
    tophat += ", max+mean token pooling" if getattr(args, "pixel_pool", "max") == "max+mean" else ""
    if getattr(args, "pixel_along", False):
        tophat += ", heads reading the features along the true devices and vessels" + (
            " (each head its own metric's)" if getattr(args, "pixel_along_own", False) else "")
    tophat += ", bf16 autocast" if getattr(args, "pixel_warmup_bf16", False) else ""
    weights = getattr(args, "pixel_warmup_metric_weights", None)
    weights = f", metric weights {'/'.join(f'{w:g}' for w in weights)}" if weights and len(set(weights)) > 1 else ""
    dense = getattr(args, "pixel_warmup_dense_weight", 0.0)
    damaged = getattr(args, "pixel_warmup_dense_damaged_weight", 1.0)
    dense = f", dense damage maps weight {dense:g}" + (f" (damaged cells x{damaged:g})" if damaged != 1 else "") \
        if dense else ""
    score = getattr(args, "pixel_warmup_score_weight", 0.0)
    dense += f", score squared-error weight {score:g}" if score else ""
    pool = ", mass pooling in the metric branches" if getattr(args, "pool", "attention") == "attention+mass" else ""
    pool += ", findings heads" if getattr(args, "findings", False) else ""
    lm = getattr(args, "lm_warmup_steps", 0)
    scorer = (f"; (1p) the profile scorer (guidewire and branches from profiles across the live frame's devices and the "
              f"true vessels, mixed with their heads; +-{getattr(args, 'profile_half_px', 7.0):g} px profiles in "
              f"{getattr(args, 'profile_samples', 33)} samples"
              + (" across and along the structure" if getattr(args, "profile_along", False) else "")
              + (", the vessels' points on their centre lines" if getattr(args, "profile_centre_lines", False) else "")
              + f", loss: {getattr(args, 'profile_loss', 'levels')}"
              + (f" plus {args.profile_point_weight:g} x each point's damage"
                 if getattr(args, "profile_point_weight", 0.0) else "") + "), "
              + ("bf16 autocast, " if getattr(args, "profile_bf16", False) else "")
              + f"{args.profile_epochs} epochs of {getattr(args, 'profile_train_points', 128)} points per image and "
              + "structure per batch"
              + (f" (each row in one of {args.profile_views} of its flips and quarter turns)"
                 if getattr(args, "profile_views", 1) > 1 else "")
              + f", weight decay {getattr(args, 'profile_weight_decay', 0.01):g}, on stage 1's pixel cache "
              + "(pixel-warmup/profile-history.json)") if getattr(args, "profile_scores", False) else ""
    lm = (f"; (1b) language warm-up of the language model alone on the rows' text, {lm} steps of batch "
          f"{args.lm_warmup_batch_size}, learning rate {args.lm_warmup_lr}"
          + (", bf16 autocast" if getattr(args, "lm_warmup_bf16", False) else "") + " (lm-warmup/history.json)") if lm else ""
    heads = getattr(args, "prompt_scores", "mos") == "heads"
    noise = getattr(args, "prompt_score_noise", 0.0)
    if heads or noise:
        lm += ("; the training prompts (1b, 2) show as the heads' result "
               + (("the stage-1 model's scores of each row (heads and profile scorer; pixel-warmup/train-scores.json)"
                   if getattr(args, "profile_scores", False) else
                   "the stage-1 heads' scores of each row (pixel-warmup/train-scores.json)") if heads else "the MOS")
               + (f" plus Gaussian noise of standard deviation {noise:g}" if noise else ""))
    answers = {"plain": "; the answers explain each recorded failure by its kind and severity alone (answer_facts: plain)",
               "recorded": "; the answers are the data's own facts (answer_facts: recorded)"}.get(
        getattr(args, "answer_facts", "recorded"), "")
    return (f"(1) pixel warm-up of MUST's quality path{tophat}{pool}, {args.pixel_warmup_epochs:g} epochs of batch "
            f"{args.pixel_warmup_batch_size}, learning rate {args.pixel_warmup_lr}, evidence weight "
            f"{args.pixel_warmup_evidence_weight}{dense}{weights} (pixel-warmup/history.json){frozen}{scorer}{lm}{answers}; "
            f"(2) {sft}.")


def _warmup_table(out: Path) -> str:
    """Validation SRCC per warm-up epoch from output_dir/pixel-warmup/history.json ('' if none)."""
    import json

    path = Path(out) / "pixel-warmup" / "history.json"
    if not path.is_file():
        return ""
    history = json.loads(path.read_text())
    head = "| epoch | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS)
    lines = [f"| {e['epoch']:g} | " + " | ".join(f"{e.get(f'val_{m}_srcc', float('nan')):.3f}" for m in METRICS) + " |"
             for e in history if "epoch" in e]
    text = "\n## Validation SRCC per warm-up epoch\n\n" + "\n".join([head, *lines]) + "\n"
    profiles = path.parent / "profile-history.json"
    if profiles.is_file():  # stage 1p: the profile scorer alone, then mixed with the heads
        entries = json.loads(profiles.read_text())
        scored = [e for e in entries if any(k.startswith("val_") for k in e)]
        mixed = next((e["mixed_val_srcc"] for e in entries if "mixed_val_srcc" in e), {})
        shares = next((e["shares"] for e in entries if "shares" in e), {})
        def cell(e: dict, m: str) -> str:
            return f"{e[f'val_{m}_srcc']:.3f}" if f"val_{m}_srcc" in e else "-"  # a metric it does not score

        lines = [f"| {e['profile_epoch']} | " + " | ".join(cell(e, m) for m in METRICS) + " |" for e in scored]
        if shares:  # fitted on the validation rows (finetune.profile_warmup.fit_shares)
            lines.append("| the scorer's share of the mixture | " + " | ".join(
                f"{shares[m]['share']:.2f}" if m in shares else "-" for m in METRICS) + " |")
        if mixed:
            lines.append(f"| heads and scorer {'mixed' if shares else 'averaged'} | "
                         + " | ".join(f"{mixed.get(m, float('nan')):.3f}" for m in METRICS) + " |")
        text += ("\n## Validation SRCC of the profile scorer (stage 1p), one view\n\n| epoch | " + " | ".join(METRICS)
                 + " |\n|---|" + "---|" * len(METRICS) + "\n" + "\n".join(lines) + "\n")
    return text


def _findings_table(test: dict) -> str:
    """The findings heads on the test split ('' for a model without them)."""
    found = test.get("findings")
    if not found:
        return ""
    lines = [f"| {m} | {found.get(f'{m}_worst_kind', float('nan')):.3f} | {found.get(f'{m}_clean_right', float('nan')):.3f} |"
             for m in METRICS]
    return ("\n## Findings heads on the test split\n\nWorst kind: share of the images with a failure of the metric "
            "whose worst recorded failure is the kind the heads hold most likely present. Clean: share of the "
            "images without one that the heads call clean. The prompt lists these findings; the explanation is "
            "written from them.\n\n| metric | worst kind | clean |\n|---|---|---|\n" + "\n".join(lines) + "\n")


def write_card(out: Path, args, training_args, model_args, results: dict, command: str = "",
               wall_s: float | None = None, n_params: int | None = None, commit: str | None = None) -> None:
    test = results.get("test", {})
    rows = "\n".join(f"| {m} | {test[m]['srcc']:.3f} | {test[m]['plcc']:.3f} | {test[m]['krcc']:.3f} | {test[m]['rmse']:.3f} |"
                     for m in METRICS if m in test)
    recipe = f"`{command}`" if command else "see results.json"
    size = f", {n_params / 1e6:.1f} M parameters" if n_params else ""
    wall = f"\n- Wall time of the command: {wall_s / 60:.1f} min (measured by the run itself)." if wall_s else ""
    views = ("\n- Scoring: the heads' level probabilities averaged over the eight flips and rotations of the pixel "
             "path's input (`dihedral_scores`), so a score changes little with the image's orientation (how little on "
             "real frames: `evals.sanity`)."
             if getattr(args, "dihedral_scores", False) else "")
    scorer = getattr(args, "profile_scores", False)
    views += ("\n- Guidewire visibility and branch discernibility: those level probabilities mixed with the "
              "profile scorer's (stage 1p; its share fitted on the validation rows) wherever the image comes with the "
              "auxiliary images it reads its "
              "structures from." if scorer else "")
    scored = "the model's expected scores (heads and profile scorer)" if scorer else "heads' expected scores"
    text = f"""---
library_name: transformers
tags: [cas-iqa, angiography, image-quality-assessment, qwen2_5_vl]
---
# CAS-IQA model: {Path(out).name}

Quality assessor for synthetic X-ray angiograms (guidewire visibility, branch discernibility,
artifact interference; 1..5, higher is better). Architecture: Qwen2.5-VL
({model_args.model_name_or_path or 'tiny'}) with MUST routing and metric heads (MUST {'on' if args.must else 'off'},
auxiliary images {'used' if args.use_aux else 'not used'}, {args.image_size} px{size}).

- Data: `{args.data}` (CAS-Sim phantom or an annotated folder), train split; validation for model selection.
- Command: {recipe}; seed {training_args.seed}.
- Training: {_stages(args, training_args)}
- Code: commit {commit or code_version()}.{wall}{views}

## Test split ({test.get('n', 0)} cases never seen in training), {scored} vs MOS

| metric | SRCC | PLCC | KRCC | RMSE |
|---|---|---|---|---|
{rows}

PLCC and RMSE after the 4-parameter logistic fit (VQEG). Figures are on the phantom: they say how
well the model reads the phantom's failures, not how it does on real generated angiograms.
""" + _findings_table(test) + _warmup_table(out)
    (Path(out) / "README.md").write_text(text)
