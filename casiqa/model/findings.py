"""Findings: which failure kinds a metric head sees, and how badly, so that the explanation can say so.

A level says how bad; a finding says what is wrong ("wire gaps, severe"). Without them the
language model writes its explanation from the visual tokens alone, and the tiny model wrote the
same sentence for every image (docs/training-log.md, 2026-11-27). With `MustSettings.findings`
each metric branch also predicts, per failure kind of its metric, whether the kind is present
(a logit) and its severity (a logit of a value in [0, 1]); the assessment prompt lists the kinds
found, as it lists the levels, and the explanation is written from them. In training the prompt
carries the row's recorded failures (as it carries the true levels); the heads learn them from
the same records (`findings_loss`, in both stages).

The vocabulary (metric -> kinds) is part of the model's config; `phantom_vocabulary` gives the
phantom's kinds, which a real annotated folder's failure records can use too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from casiqa.metrics import SEVERITY_WORDS, kind_title, level_of, says_damaged, severity_word  # noqa: F401  (re-exported)

PRESENT = 0.5                                       # a kind is reported when its presence probability is above


def phantom_vocabulary(metrics: tuple[str, ...]) -> dict[str, list[str]]:
    """The phantom's failure kinds, per metric (casiqa.phantom.failures.KINDS)."""
    from casiqa.phantom.failures import kinds_of

    return {m: sorted(kinds_of(m)) for m in metrics}


def vocabulary(findings: dict[str, list[str]], metrics: tuple[str, ...]) -> list[tuple[str, str]]:
    """(metric, kind) pairs in the heads' output order: metrics in `metrics` order, kinds as given."""
    unknown = [m for m in findings if m not in metrics]
    if unknown:
        raise ValueError(f"findings name unknown metric(s) {', '.join(unknown)}; metrics are {', '.join(metrics)}")
    return [(m, k) for m in metrics for k in findings.get(m, [])]


def finding_targets(failures: list[dict] | None, vocab: list[tuple[str, str]], where: str = "row") -> torch.Tensor:
    """A row's failure records -> [K, 2] targets (presence 0/1, severity in [0, 1]; the worst of a
    kind recorded twice); -1 everywhere for a row without records (ignored by the loss). A record
    whose kind the vocabulary lacks is refused by name: silently dropping it would teach the head
    that the image is clean."""
    from casiqa.data.rows import DatasetFieldError

    out = torch.full((len(vocab), 2), -1.0)
    if failures is None:
        return out
    out.zero_()
    index = {mk: i for i, mk in enumerate(vocab)}
    for j, f in enumerate(failures):
        key = (f.get("metric"), f.get("kind"))
        if key not in index:
            known = ", ".join(k for m, k in vocab if m == key[0]) or "none"
            raise DatasetFieldError(f"{where}: failure {j} has kind {key[1]!r} for {key[0]}, which the findings "
                                    f"vocabulary lacks (known: {known})")
        i = index[key]
        out[i, 0] = 1.0
        out[i, 1] = max(float(out[i, 1]), min(max(float(f.get("severity", 1.0)), 0.0), 1.0))
    return out


def findings_loss(logits: torch.Tensor | None, targets: torch.Tensor | None) -> torch.Tensor | None:
    """logits [B, K, 2] (presence, severity) against targets [B, K, 2] (finding_targets): BCE of
    presence, plus BCE of severity on the kinds present; rows without records (targets -1) are
    ignored. None when there is nothing to learn from."""
    if logits is None or targets is None:
        return None
    logits, targets = logits.float(), targets.to(logits.device, torch.float32)
    known = targets[..., 0] >= 0
    if not known.any():
        return None
    loss = F.binary_cross_entropy_with_logits(logits[..., 0][known], targets[..., 0][known])
    present = targets[..., 0] > 0.5
    if present.any():
        loss = loss + F.binary_cross_entropy_with_logits(logits[..., 1][present], targets[..., 1][present])
    return loss


Findings = dict[str, list[tuple[str, float]]]   # metric -> [(kind, severity)], worst first


def read_findings(logits: torch.Tensor, vocab: list[tuple[str, str]], metrics: tuple[str, ...],
                  threshold: float = PRESENT, scores: dict[str, float] | None = None) -> Findings:
    """One sample's finding logits [K, 2] -> per metric the kinds whose presence probability is
    above `threshold`, with their predicted severity, worst first (a metric with none: []).

    Given the heads' `scores`, a metric scored fair or worse (casiqa.metrics.says_damaged) with
    no kind above the threshold reports its most likely kind all the same: its score says the
    structure is damaged, and the explanation, written from the findings, would otherwise call it
    intact (the findings heads miss more failures than the level heads do; README, "Explanations")."""
    p = torch.sigmoid(logits.float()).cpu().tolist()
    out: Findings = {m: [] for m in metrics}
    likeliest: dict[str, tuple[float, str, float]] = {}
    for (metric, kind), (present, severity) in zip(vocab, p, strict=True):
        if present > threshold:
            out[metric].append((kind, round(severity, 3)))
        if present > likeliest.get(metric, (-1.0,))[0]:
            likeliest[metric] = (present, kind, round(severity, 3))
    for m, (_, kind, severity) in likeliest.items():
        if not out[m] and scores is not None and m in scores and says_damaged(level_of(scores[m])):
            out[m].append((kind, severity))
    return {m: sorted(v, key=lambda ks: -ks[1]) for m, v in out.items()}


def recorded_findings(failures: list[dict], metrics: tuple[str, ...]) -> Findings:
    """A row's failure records as findings (the training prompt's), worst first."""
    out: Findings = {m: [] for m in metrics}
    for f in failures:
        if f.get("metric") in out:
            out[f["metric"]].append((str(f.get("kind")), float(f.get("severity", 1.0))))
    return {m: sorted(v, key=lambda ks: -ks[1]) for m, v in out.items()}


def describe(findings: list[tuple[str, float]]) -> str:
    """One metric's findings in the prompt's words: '"wire gaps (severe); wire fade (slight)"', or
    'none'. Quoted and joined by '; ' as the explanation's facts are, so that each kind's words
    reach the language model as the very tokens its answer begins the fact with (a quote, then
    'wire'; '; ', then ' wire'): copying the findings into the text is then copying tokens, not
    mapping ' haze' onto 'haze'. Unquoted, the tiny model put another kind first for 29 of 47
    test images whose findings listed vessel blur (docs/training-log.md, sixth session)."""
    if not findings:
        return "none"
    return '"' + "; ".join(f"{kind_title(kind)} ({severity_word(s)})" for kind, s in findings) + '"'


def prompt_findings(findings: Findings | None) -> dict[str, str] | None:
    """Findings -> what prompts/assess.j2 shows per metric (None: no findings block)."""
    return None if findings is None else {m: describe(v) for m, v in findings.items()}


def worst_kind_accuracy(logits: torch.Tensor, targets: torch.Tensor, vocab: list[tuple[str, str]],
                        metrics: tuple[str, ...]) -> dict[str, float]:
    """Per metric, over rows with a recorded failure of it: the share whose worst recorded kind is
    the kind the heads hold most likely present, and over rows with none, the share the heads call
    clean (no kind above PRESENT). logits, targets [N, K, 2]. What the explanation can name."""
    p = torch.sigmoid(logits.float()).cpu()
    t = targets.float().cpu()
    out = {}
    for m in metrics:
        cols = [i for i, (mm, _) in enumerate(vocab) if mm == m]
        if not cols:
            continue
        known = t[:, cols[0], 0] >= 0
        tp, ts, pp = t[known][:, cols, 0], t[known][:, cols, 1], p[known][:, cols, 0]
        failed = tp.sum(-1) > 0
        worst_true = (ts * tp - (1 - tp)).argmax(-1)
        hit = (pp.argmax(-1) == worst_true) & (pp.max(-1).values > PRESENT)
        out[f"{m}_worst_kind"] = round(float(hit[failed].float().mean()), 4) if failed.any() else float("nan")
        clean = (pp <= PRESENT).all(-1)
        out[f"{m}_clean_right"] = round(float(clean[~failed].float().mean()), 4) if (~failed).any() else float("nan")
    return out
