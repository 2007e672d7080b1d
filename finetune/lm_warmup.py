"""Language warm-up: the language model learns to write the answer from the prompt, before SFT.

Run by `python -m finetune.sft` when the recipe sets `lm_warmup_steps` (the tiny recipe does).

A pretrained VLM arrives able to write; the tiny model's language model starts from random
weights, and 60 SFT steps of batch 16 taught it each metric's most common sentence and nothing
more (docs/training-log.md). Its job is narrow: the prompt carries the heads' levels and findings
(casiqa/model/findings.py), and the explanation says the findings in clinical words. That mapping
is text to text, so it is learnt here on the training rows' conversations without their images:
no image is decoded and no vision encoder runs, so a step of batch 32 costs a fraction of an SFT
step of 16 on CPU, and the language model sees the training set several times. SFT then trains
everything on the same answers with the images, where the wording that depends on the image
(which vessel, which part of the field) can only be learnt.

Only the language model (its embeddings, layers and output head) is trained here; MUST, the heads
and the vision encoder are untouched.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch

# the row fields the warm-up reads; the images stay unread (an auxiliary image counts as given
# when its column exists, so the prompt names the images a training row would show)
TEXT_FIELDS = ("id", "scores", "facts", "failures")


@dataclass
class LmWarmupConfig:
    steps: int = 0
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    bf16: bool = False          # bf16 autocast of the forward pass (loss in fp32): ~1.8x per step on an AVX512-BF16 CPU
    seed: int = 0


def text_rows(rows) -> list[dict]:
    """The rows' text fields, without decoding an image: a datasets split is read column by column;
    a list of dicts (an annotated folder) keeps image paths, which cost nothing."""
    if hasattr(rows, "column_names"):
        names = rows.column_names
        cols = {f: rows[f] for f in TEXT_FIELDS if f in names}
        given = {r: True for r in ("live", "reference") if r in names}
        return [{**{f: v[i] for f, v in cols.items()}, **given} for i in range(len(rows))]
    return [{f: row.get(f) for f in (*TEXT_FIELDS, "live", "reference")} for row in rows]


def language_parameters(model) -> list[torch.nn.Parameter]:
    """The language model's parameters (embeddings, layers, output head), not MUST's or the encoder's."""
    base = model.model
    params = list(base.language_model.parameters())
    seen = {id(p) for p in params}
    return params + [p for p in model.lm_head.parameters() if id(p) not in seen]  # tied embeddings: once


def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on the labelled (answer) positions, in fp32."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def lm_warm_up(model, collator, rows, cfg: LmWarmupConfig, log=print, progress=None) -> list[dict]:
    """Train the language model on the rows' conversations without images; returns the log (mean
    answer loss per tenth of the run)."""
    if cfg.steps <= 0:
        return []
    device = next(model.parameters()).device
    if torch.cuda.is_available() and device.type != "cuda":
        model.to("cuda")
        device = torch.device("cuda")
    data = text_rows(rows)
    params = language_parameters(model)
    frozen = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.learning_rate, total_steps=cfg.steps, pct_start=0.1)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.train()
    history, losses, order = [], [], []
    every = max(1, cfg.steps // 10)
    bar = progress(total=cfg.steps, desc="language warm-up") if progress else None
    try:
        for step in range(1, cfg.steps + 1):
            if len(order) < cfg.batch_size:
                more = list(range(len(data)))
                rng.shuffle(more)
                order += more
            idx, order = order[:cfg.batch_size], order[cfg.batch_size:]
            batch = collator.text_batch([data[i] for i in idx])
            keep = batch.pop("answer_span") + 1          # the answers' positions and the one before them
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                # logits on the last positions only: the output layer over the prompt costs ~a fifth of a step
                logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False,
                               logits_to_keep=keep).logits
            loss = answer_loss(logits.float(), batch["labels"][:, -keep:])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", refresh=False)
            if step % every == 0 or step == cfg.steps:
                entry = {"lm_warmup_step": step, "loss": round(float(np.mean(losses[-every:])), 4)}
                history.append(entry)
                log(entry)
    finally:
        for p, flag in frozen.items():
            p.requires_grad_(flag)
        if bar:
            bar.close()
    if not all(math.isfinite(e["loss"]) for e in history):
        raise FloatingPointError(f"the language warm-up diverged: {history[-1]}")
    return history
