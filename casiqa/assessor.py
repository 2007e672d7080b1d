"""The assessor: images in, schema-valid assessments out, in batches, on CUDA (bf16) or CPU.

Scores come from the metric heads (expected score and confidence of each head's level
distribution); evidence boxes from the pixel path's damage maps (from the MUST routing maps in a
model without them); the level and explanation text from the language model under an Outlines
grammar that pins each level to its head's level.
"""

from __future__ import annotations

import gc
import json
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from casiqa.evidence import box_damage, evidence_boxes
from casiqa.imaging import to_model_image
from casiqa.inputs import AssessInput
from casiqa.metrics import METRIC_TITLES, METRICS, SCORE_DECIMALS, level_of
from casiqa.model.findings import prompt_findings, read_findings
from casiqa.model.levels import confidence, expected_score
from casiqa.schema import AUX_ROLES, MAX_EXPLANATION_CHARS, Assessment, generation_model


@dataclass
class HeadResult:
    logits: np.ndarray                  # [M, L] level logits
    score: dict[str, float]
    confidence: dict[str, float]
    routing: np.ndarray | None          # [h, w, M] or None with MUST off
    findings: dict[str, list[tuple[str, float]]] | None = None  # metric -> [(kind, severity)], worst first
                                        # (None: the model has no findings heads)
    damage: np.ndarray | None = None    # [M, H/4, W/4] the pixel path's damage maps (0..1), or None

    def evidence_map(self, metric: int) -> np.ndarray | None:
        """The map a metric's evidence boxes come from: its damage map where the model has one
        (trained on where the failures are), else its routing map; None with MUST off."""
        if self.damage is not None:
            return self.damage[metric]
        return None if self.routing is None else self.routing[..., metric]

    def evidence(self, metric: int) -> list[dict]:
        """A metric's evidence boxes (`evidence_boxes` of `evidence_map`), each with the damage map's
        peak inside it where they come from one (`box_damage`); none with MUST off."""
        where = self.evidence_map(metric)
        if where is None:
            return []
        boxes = evidence_boxes(where)
        return boxes if self.damage is None else box_damage(self.damage[metric], boxes)

    @property
    def levels(self) -> tuple[str, ...]:
        return tuple(level_of(self.score[m]) for m in METRICS)


def default_device() -> tuple[str, torch.dtype]:
    return ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)


class Assessor:
    def __init__(self, model, processor, model_id: str, batch_size: int = 8, device: str | None = None,
                 grammar_cache: int = 4, pin_titles: bool = True):
        """`pin_titles`: each explanation's facts open with the kinds its findings list, in order,
        enforced while decoding (casiqa.titles); for models whose facts begin with the kind's
        title, as every model with findings heads trained here does."""
        self.device = device or default_device()[0]
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.model_id = model_id
        self.batch_size = batch_size
        # compiled grammars kept per level combination (least recently used dropped): each holds
        # ~360 MB with the tiny tokenizer (measured), and there are up to 5^3 combinations
        self.grammar_cache = grammar_cache
        self._outlines = None
        self.pin_titles = pin_titles
        self._pieces: list[str] | None = None   # each token's text, for the title pins (computed once)

    @classmethod
    def load(cls, path: str, batch_size: int = 8, grammar_cache: int = 4, pin_titles: bool = True) -> Assessor:
        from casiqa.model.loading import load

        device, dtype = default_device()
        model, processor = load(path, dtype=dtype, device=device)
        return cls(model, processor, model_id=str(path), batch_size=batch_size, device=device, grammar_cache=grammar_cache,
                   pin_titles=pin_titles)

    # -- prompts ---------------------------------------------------------------------------
    def messages(self, inp: AssessInput, head: HeadResult | None) -> list[dict]:
        from prompts import render

        aux = [role for role, _ in inp.aux()]
        content = [{"type": "image", "image_role": "target"}] + [{"type": "image", "image_role": r} for r in aux]
        heads = {m: {"level": level_of(head.score[m]), "score": head.score[m]} for m in METRICS} if head else None
        text = (render("assess.j2", aux=aux, head=heads, metrics=METRICS, findings=prompt_findings(head.findings))
                if head else "Assess the synthetic angiogram.")
        content.append({"type": "text", "text": text})
        return [{"role": "system", "content": render("system.j2", metrics=METRICS, titles=METRIC_TITLES)},
                {"role": "user", "content": content}]

    @staticmethod
    def images(inp: AssessInput) -> list:
        return [to_model_image(inp.target)] + [to_model_image(a) for _, a in inp.aux()]

    # -- heads -----------------------------------------------------------------------------
    @torch.no_grad()
    def heads(self, batch: list[AssessInput]) -> list[HeadResult]:
        """Metric heads only (no language model): the fast path, `--scores-only`."""
        out: list[HeadResult] = []
        for start in range(0, len(batch), self.batch_size):
            out.extend(self._heads(batch[start : start + self.batch_size]))
        return out

    def _heads(self, chunk: list[AssessInput]) -> list[HeadResult]:
        images, roles, samples = [], [], []
        for b, inp in enumerate(chunk):
            inp.check()
            for role, pil in zip(["target"] + [r for r, _ in inp.aux()], self.images(inp), strict=True):
                images.append(pil)
                roles.append(role)
                samples.append(b)
        enc = self.processor.image_processor(images=images, return_tensors="pt")
        feats = self.model.model.get_image_features(
            enc["pixel_values"].to(self.device), enc["image_grid_thw"].to(self.device),
            roles=roles, samples=samples, batch_size=len(chunk))
        logits = feats.level_logits.float()                                   # [B, M, L]
        scores, confs = expected_score(logits).cpu().numpy(), confidence(logits).cpu().numpy()
        found = getattr(feats, "finding_logits", None)
        vocab = self.model.model.must.vocab if found is not None else []
        results = []
        for b in range(len(chunk)):
            routing = feats.routing[b]
            damage = None if getattr(feats, "damage", None) is None else feats.damage[b]
            # rounded once, here: the level the grammar pins and the score the report carries
            # must agree (2.4996 is 'poor' but prints as 2.5, which is 'fair')
            score = {m: round(float(scores[b, j]), SCORE_DECIMALS) for j, m in enumerate(METRICS)}
            results.append(HeadResult(
                logits=logits[b].cpu().numpy(),
                score=score,
                confidence={m: float(confs[b, j]) for j, m in enumerate(METRICS)},
                routing=None if routing is None else routing.float().cpu().numpy(),
                findings=None if found is None else read_findings(found[b], vocab, METRICS, scores=score),
                damage=None if damage is None else damage.float().cpu().numpy(),
            ))
        return results

    # -- full assessment -------------------------------------------------------------------
    def assess(self, batch: list[AssessInput], generate: bool = True, temperature: float = 0.0,
               heads: list[HeadResult] | None = None) -> list[Assessment]:
        """Schema-valid assessments, in input order. generate=False gives a fixed explanation;
        `heads`, if the caller already has them for this batch, are not computed again."""
        if heads is None:
            heads = self.heads(batch)
        elif len(heads) != len(batch):
            raise ValueError(f"{len(heads)} head results for {len(batch)} inputs: pass one per input, in order")
        texts: list[dict | None] = [None] * len(batch)
        if generate:
            groups: dict[tuple[str, ...], list[int]] = {}
            for i, h in enumerate(heads):
                groups.setdefault(h.levels, []).append(i)
            for levels, idx in groups.items():
                for start in range(0, len(idx), self.batch_size):
                    part = idx[start : start + self.batch_size]
                    written = self._write(levels, [batch[i] for i in part], [heads[i] for i in part], temperature)
                    for i, w in zip(part, written, strict=True):
                        texts[i] = w
        return [self._report(inp, h, t) for inp, h, t in zip(batch, heads, texts, strict=True)]

    def _write(self, levels, chunk, heads, temperature) -> list[dict]:
        from outlines.inputs import Image as OutlinesImage

        generator = self._generator(levels)
        prompts = []
        for inp, head in zip(chunk, heads, strict=True):
            text = self.processor.tokenizer.apply_chat_template(self.messages(inp, head), tokenize=False,
                                                                add_generation_prompt=True)
            prompts.append([text, *(OutlinesImage(im) for im in self.images(inp))])
        kwargs = {"max_new_tokens": max_new_tokens(), "do_sample": temperature > 0}
        if temperature > 0:
            kwargs["temperature"] = temperature
        grammar = generator.logits_processor
        if self.pin_titles and any(h.findings for h in heads):
            from casiqa.titles import PinnedGrammar, TitlePins, fact_openings, token_pieces

            tok = self.processor.tokenizer
            if self._pieces is None:
                self._pieces = token_pieces(tok)
            grammar = PinnedGrammar(grammar, TitlePins(tok, [fact_openings(h.findings) for h in heads], self._pieces))
        must = getattr(self.model.model, "must", None)
        # the heads were read already: generating needs the tokens of the image as given, not the views
        with torch.no_grad(), must.one_view() if must is not None else nullcontext():
            grammar.reset()
            raw = generator.model.generate_batch(prompts, grammar, **kwargs)
        model = generation_model(levels)
        return [model.model_validate_json(r).model_dump() for r in raw]

    def _generator(self, levels: tuple[str, ...]):
        import outlines
        from outlines.types import JsonSchema

        if self._outlines is None:
            self._outlines = outlines.from_transformers(self.model, self.processor)
            self._generator_for = lru_cache(maxsize=self.grammar_cache)(lambda lv: outlines.Generator(
                self._outlines, JsonSchema(json.dumps(generation_model(lv).model_json_schema()), whitespace_pattern="")))
        misses = self._generator_for.cache_info().misses
        generator = self._generator_for(levels)
        if self._generator_for.cache_info().misses > misses and gc.isenabled():
            # an evicted grammar sits in reference cycles inside Outlines, which Python's collector
            # only reaches after many more small allocations: without this, a run over many level
            # combinations grew by ~2 GB per batch of 16 (measured) and was killed at 24 GB
            gc.collect()
        return generator

    def _report(self, inp: AssessInput, head: HeadResult, written: dict | None) -> Assessment:
        metrics = {}
        for j, m in enumerate(METRICS):
            evidence = head.evidence(j)
            explanation = written[m]["explanation"] if written else "explanation not generated (scores only)"
            metrics[m] = {"score": head.score[m], "level": level_of(head.score[m]),
                          "confidence": round(head.confidence[m], 3), "explanation": explanation, "evidence": evidence}
        return Assessment(metrics=metrics, auxiliary_images=[r for r, _ in inp.aux()], model_id=self.model_id)


def max_new_tokens() -> int:
    """An upper bound on the tokens of any JSON the grammar admits (every token is >= 1 char)."""
    skeleton = json.dumps({m: {"level": "excellent", "explanation": ""} for m in METRICS}, separators=(",", ":"))
    return len(skeleton) + len(METRICS) * MAX_EXPLANATION_CHARS + 1


__all__ = ["AUX_ROLES", "AssessInput", "Assessor", "HeadResult", "max_new_tokens"]
