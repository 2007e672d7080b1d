"""Training rows and the collator: phantom DatasetDict or annotated folder -> model inputs.

A row becomes one conversation: system prompt; user turn with the target image, the auxiliary
images that survive random dropping, and the assessment prompt carrying the ground-truth
levels (at inference the heads' levels take their place) and, for a model with findings heads,
the row's recorded failures as findings (at inference the heads' findings); assistant turn with
the JSON the grammar admits. Labels cover the assistant turn only. `level_targets` are DeQA-style
soft labels from each metric's MOS and standard deviation; `finding_targets` what the findings
heads learn (casiqa/model/findings.py).
"""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from casiqa.data.rows import DatasetFieldError, failure_list, grey_image, load_rows  # noqa: F401  (re-exported)
from casiqa.imaging import to_rgb
from casiqa.metrics import METRIC_TITLES, METRICS, SCORE_MAX, SCORE_MIN, level_of
from casiqa.model.findings import finding_targets, prompt_findings, recorded_findings
from casiqa.model.levels import soft_levels
from casiqa.schema import to_explanation
from finetune.config import ANSWER_FACTS


def answer_facts(row: dict, kind: str = "plain") -> dict[str, list[str]]:
    """What a row's answer explains per metric. "plain": its failure records as plain facts
    (casiqa.phantom.facts.plain_facts: kind and severity, no place, branch name or count), so
    that the answer says no more than the prompt's findings, from which the model writes it at
    inference; the phantom's facts name places the model cannot know, and a model trained on them
    wrote a wrong vessel or field in most explanations that named one (docs/training-log.md, sixth
    session). A row whose records list no failure of a metric gets that metric's plain clean
    statement; a row without failure records keeps its own facts. "recorded": the row's facts as
    written."""
    if kind not in ANSWER_FACTS:
        raise ValueError(f"answer facts must be one of {', '.join(ANSWER_FACTS)}, got {kind!r}")
    failures = failure_list(row) if kind == "plain" else None
    if failures is None:
        return row.get("facts") or {}
    from casiqa.phantom.facts import plain_facts

    return plain_facts(failures, METRICS)


def answer_json(row: dict, levels: dict[str, str] | None = None, facts: str = "plain") -> str:
    """The assistant turn: what the Outlines grammar admits, key order and all, no whitespace. Its
    levels are the prompt's (`levels`; by default the MOS's): the grammar pins the answer's level
    to the level the prompt gives; its explanations are `answer_facts(row, facts)`."""
    facts = answer_facts(row, facts)
    out = {}
    for m in METRICS:
        lines = facts.get(m) or []
        text = to_explanation(lines) if lines else "no finding"
        level = levels[m] if levels else level_of(float(row["scores"][m]["mos"]))
        out[m] = {"level": level, "explanation": text}
    return json.dumps(out, separators=(",", ":"))


def box_map(failures: list[dict] | None, grid: tuple[int, int]) -> torch.Tensor | None:
    """[M, h, w]: 1 where a token's centre lies in a box of a failure of that metric, else 0;
    None for a row without failure records."""
    if failures is None:
        return None
    h, w = grid
    out = torch.zeros(len(METRICS), h, w)
    cy, cx = (torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w
    for f in failures:
        x0, y0, x1, y1 = f["bbox"]
        inside = ((cy >= y0) & (cy <= y1))[:, None] & ((cx >= x0) & (cx <= x1))[None, :]
        out[METRICS.index(f["metric"])][inside] = 1.0
    return out


# What a failure of each metric damages, for the dense maps: the devices (and any wire drawn where
# there is none: a displaced or ghost wire), the vessel tree, or (artefacts, and any metric whose
# masks a row lacks) the whole failure box. A metric's masks that a row has are joined.
DAMAGED_STRUCTURE = {"guidewire_visibility": ("device_mask", "extra_wire_mask"),
                     "branch_discernibility": ("vessel_mask",)}


def damage_maps(row: dict, grid: tuple[int, int], dilate: int = 1,
                target_shape: tuple[int, int] | None = None) -> torch.Tensor | None:
    """[M, h, w] dense damage targets on a fine grid (the pixel path's H/4 cells): inside a
    failure's box, on the structure that failure damages (DAMAGED_STRUCTURE: the row's device mask
    joined by its extra-wire mask, or its vessel mask; max-pooled onto the grid and dilated by
    `dilate` cells: a blurred wire or vessel spreads beside the true one), the failure's severity,
    so a displaced or ghost wire is marked where it was drawn; 0 elsewhere; the maximum where failures
    overlap. None for a row without failure records. A mask of another size than the target (its
    [H, W] as `target_shape`, read from the row when not given) is refused: it would mark the
    wrong pixels."""
    failures = failure_list(row)
    if failures is None:
        return None
    h, w = grid
    structure = {}
    masks = {key: grey_image(row.get(key)) for keys in DAMAGED_STRUCTURE.values() for key in keys}
    masks = {key: m for key, m in masks.items() if m is not None}
    if target_shape is None and masks:
        target = grey_image(row.get("synthetic"))
        target_shape = None if target is None else target.shape
    for key, mask in masks.items():
        if target_shape is not None and tuple(mask.shape) != tuple(target_shape):
            raise DatasetFieldError(f"row {row.get('id', '?')}: {key} is {mask.shape[1]}x"
                                    f"{mask.shape[0]} px, the target {target_shape[1]}x{target_shape[0]} px; "
                                    "masks must match the target")
    for metric, keys in DAMAGED_STRUCTURE.items():
        present = [masks[k] > 0.0 for k in keys if k in masks]
        if not present:
            continue
        joined = np.logical_or.reduce(present)
        m = torch.nn.functional.adaptive_max_pool2d(torch.from_numpy(joined).float()[None], (h, w))
        if dilate:
            m = torch.nn.functional.max_pool2d(m[None], 2 * dilate + 1, stride=1, padding=dilate)[0]
        structure[metric] = m[0]
    out = torch.zeros(len(METRICS), h, w)
    cy, cx = (torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w
    for f in failures:
        x0, y0, x1, y1 = f["bbox"]
        inside = (((cy >= y0) & (cy <= y1))[:, None] & ((cx >= x0) & (cx <= x1))[None, :]).float()
        j = METRICS.index(f["metric"])
        where = inside * structure.get(f["metric"], 1.0)
        severity = float(f.get("severity", 1.0))
        out[j] = torch.maximum(out[j], severity * where)
    return out


def evidence_targets(rows: list[dict], grid_thw: torch.Tensor, images_per_row: list[int]) -> torch.Tensor:
    """[B, M, H, W] per target-token maps (box_map), -1 for padding and rows without failure
    records (ignored)."""
    starts = [sum(images_per_row[:b]) for b in range(len(rows))]            # index of each row's target image
    grids = [(int(grid_thw[i, 1]) // 2, int(grid_thw[i, 2]) // 2) for i in starts]
    h_max, w_max = max(g[0] for g in grids), max(g[1] for g in grids)
    out = torch.full((len(rows), len(METRICS), h_max, w_max), -1.0)
    for b, (row, (h, w)) in enumerate(zip(rows, grids, strict=True)):
        maps = box_map(failure_list(row), (h, w))
        if maps is not None:
            out[b, :, :h, :w] = maps
    return out


class Collator:
    """Rows -> a padded batch with labels on the answer, pixel inputs and soft level targets."""

    def __init__(self, processor, aux_drop: float = 0.3, use_aux: bool = True, seed: int = 0, train: bool = True,
                 vocab: list[tuple[str, str]] | None = None, score_noise: float = 0.0,
                 prompt_scores: dict[str, list[float]] | None = None, answer_facts: str = "plain"):
        """`vocab`: the model's findings vocabulary (Must.vocab), for the prompt's findings and the
        findings targets; None or empty for a model without findings heads. `score_noise`: in
        training, the standard deviation of Gaussian noise added to each MOS before it is shown in
        the prompt as the heads' score and level (the answer's level follows it), as the heads'
        own scores are off at inference. `prompt_scores`: in training, row id -> the scores (one per
        metric, in METRICS order) to show in the prompt instead of the MOS, such as the stage-1
        heads' own scores of the row (finetune.sft.heads_scores), so that the prompt pairs levels
        and findings as inference will; rows it lacks show the MOS. The level targets stay the
        MOS's either way. `answer_facts`: what the answers explain (finetune.data.answer_facts)."""
        from prompts import render

        self.processor = processor
        self.vocab = list(vocab or [])
        if score_noise < 0:
            raise ValueError(f"score_noise must be >= 0, got {score_noise}")
        self.aux_drop, self.use_aux, self.train, self.score_noise = aux_drop, use_aux, train, score_noise
        self.prompt_scores = dict(prompt_scores or {})
        bad = [k for k, v in self.prompt_scores.items() if len(v) != len(METRICS)]
        if bad:
            raise ValueError(f"prompt_scores need one score per metric ({len(METRICS)}); row {bad[0]!r} has "
                             f"{len(self.prompt_scores[bad[0]])}")
        if answer_facts not in ANSWER_FACTS:
            raise ValueError(f"answer_facts must be one of {', '.join(ANSWER_FACTS)}, got {answer_facts!r}")
        self.answer_facts = answer_facts
        self.rng = random.Random(seed)
        self.system = render("system.j2", metrics=METRICS, titles=METRIC_TITLES)
        self._render = render

    def aux_of(self, row: dict) -> list[str]:
        if not self.use_aux:
            return []
        present = [r for r in ("live", "reference") if row.get(r) is not None]
        if not self.train:
            return present
        return [r for r in present if self.rng.random() >= self.aux_drop]

    def head_of(self, row: dict) -> dict[str, dict]:
        """What the prompt shows as the heads' result per metric: the MOS and its level, or in
        training the row's `prompt_scores` where given, with `score_noise` plus noise (within the
        score range), so that the text learns to follow the findings rather than the level."""
        head = {}
        given = self.prompt_scores.get(str(row.get("id"))) if self.train else None
        for j, m in enumerate(METRICS):
            score = float(given[j]) if given is not None else float(row["scores"][m]["mos"])
            if self.train and self.score_noise:
                score += self.rng.gauss(0.0, self.score_noise)
            score = min(max(score, SCORE_MIN), SCORE_MAX)
            head[m] = {"level": level_of(score), "score": score}
        return head

    def conversation(self, row: dict, aux: list[str], answer: str, images: bool = True,
                     head: dict[str, dict] | None = None) -> list[dict]:
        """The row as a chat (`head`: what the prompt shows as the heads' result, by default
        `head_of(row)`); with images=False the same text without the image placeholders (the
        language warm-up, finetune/lm_warmup.py)."""
        head = head if head is not None else self.head_of(row)
        failures = failure_list(row) if self.vocab else None
        # a row without failure records has no findings block (its findings are unknown, not "none")
        found = None if failures is None else prompt_findings(recorded_findings(failures, METRICS))
        content = [{"type": "image", "image_role": "target"}] + [{"type": "image", "image_role": r} for r in aux]
        content = content if images else []
        content.append({"type": "text", "text": self._render("assess.j2", aux=aux, head=head, metrics=METRICS,
                                                             findings=found)})
        return [{"role": "system", "content": self.system}, {"role": "user", "content": content},
                {"role": "assistant", "content": answer}]

    def __call__(self, rows: list[dict]) -> dict:
        tok = self.processor.tokenizer
        texts, images, answers, auxes = [], [], [], []
        for row in rows:
            aux = self.aux_of(row)
            auxes.append(aux)
            head = self.head_of(row)
            answer = answer_json(row, {m: h["level"] for m, h in head.items()}, self.answer_facts)
            texts.append(tok.apply_chat_template(self.conversation(row, aux, answer, head=head), tokenize=False))
            images.append([to_rgb(grey_image(row["synthetic"]))] + [to_rgb(grey_image(row[r])) for r in aux])
            answers.append(self._answer_tokens(answer))
        batch = self._encode(texts, answers, images)
        batch["evidence_targets"] = evidence_targets(rows, batch["image_grid_thw"], [1 + len(a) for a in auxes])
        mos = torch.tensor([[float(r["scores"][m]["mos"]) for m in METRICS] for r in rows])
        std = torch.tensor([[float(r["scores"][m].get("std") or 0.0) for m in METRICS] for r in rows])
        batch["level_targets"] = soft_levels(mos, std)
        if self.vocab:
            batch["finding_targets"] = torch.stack([finding_targets(failure_list(r), self.vocab, f"row {r.get('id', '?')}")
                                                    for r in rows])
        return dict(batch)

    def text_batch(self, rows: list[dict]) -> dict:
        """The rows' conversations without images, left-padded so that every answer ends the row:
        input_ids, attention_mask and labels on the answer, and `answer_span`, the most tokens an
        answer (with its end of turn) takes (the language warm-up computes logits on those last
        positions only; the rows need no image decoded, only whether their auxiliary images exist)."""
        tok = self.processor.tokenizer
        texts, answers = [], []
        for row in rows:
            head = self.head_of(row)
            answer = answer_json(row, {m: h["level"] for m, h in head.items()}, self.answer_facts)
            texts.append(tok.apply_chat_template(self.conversation(row, self.aux_of(row), answer, images=False,
                                                                   head=head), tokenize=False))
            answers.append(self._answer_tokens(answer))
        batch = dict(self._encode(texts, answers, left=True))
        batch["answer_span"] = max(answers)
        return batch

    def _answer_tokens(self, answer: str) -> int:
        """How many tokens the answer and its end of turn take: the labelled tail of its row."""
        return len(self.processor.tokenizer.encode(answer + "<|im_end|>\n", add_special_tokens=False))

    def _encode(self, texts: list[str], answers: list[int], images: list | None = None, left: bool = False):
        """Tokenised (and, given images, processed) rows, right-padded (or left-padded), with labels
        on each row's last `answers[i]` tokens (the answer and its end of turn)."""
        tok = self.processor.tokenizer
        tok.padding_side = "left" if left else "right"
        try:
            if images is None:
                batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            else:
                batch = self.processor(text=texts, images=images, return_tensors="pt", padding=True)
        finally:
            tok.padding_side = "left"
        labels = torch.full_like(batch["input_ids"], -100)
        width = batch["input_ids"].shape[1]
        lengths = batch["attention_mask"].sum(-1).tolist()
        for i, (n, k) in enumerate(zip(lengths, answers, strict=True)):
            end = width if left else n  # the answer ends each row: before its padding (right) or at the end (left)
            labels[i, end - k : end] = batch["input_ids"][i, end - k : end]
        batch["labels"] = labels
        return batch
