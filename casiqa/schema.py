"""The assessment report: one pydantic schema, the single source of truth for what CAS-IQA outputs.

`Assessment` is what every assessor run produces and every consumer validates. The part a
language model writes (a level and an explanation per metric) is `generation_model(levels)`,
derived from the same definitions: its level is pinned to the head's level, and its
explanation can hold no level word at all, so the text can never contradict the score.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from casiqa.metrics import LEVELS, METRICS, SCORE_MAX, SCORE_MIN, level_of

SCHEMA_VERSION = "1.0"
AUX_ROLES = ("live", "reference")
Level = Literal[LEVELS]  # type: ignore[valid-type]

# Explanations: at most MAX_WORDS words of letters and digits (each at most MAX_WORD_LEN),
# separated by spaces and , ; : . % ( ) ' - (no quotes or backslashes (no JSON escapes) and
# no level word in any letter case). Bounded by construction, so constrained generation
# always ends within a known number of tokens.
MAX_WORDS = 28
MAX_WORD_LEN = 16
SEPARATORS = " ,;:.%()'-"
_ALNUM = "A-Za-z0-9"
_SEP = "[ ,;:.%()'\\-]"


def _word_not_in(words: tuple[str, ...], max_len: int) -> str:
    """Regex for an alphanumeric word of 1..max_len characters that neither is nor starts with
    any of `words` (case-insensitive: "poor", "Poors", "poorly" are all refused, since a reader
    takes them for the level), built from a trie of the words so that it needs no look-ahead."""
    trie: dict = {}
    for w in words:
        node = trie
        for ch in w.lower():
            node = node.setdefault(ch, {})
        node["$"] = {}

    def alnum_except(chars: set[str]) -> str:
        keep = [c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" if c not in chars]
        return "[" + "".join(keep) + "]"

    def node_regex(node: dict, depth: int) -> str | None:
        if "$" in node:
            return None  # a whole level word read: the word can neither stop nor go on
        alts = []
        children = set(node)
        for c in sorted(children):
            sub = node_regex(node[c], depth + 1)
            if sub is not None:
                alts.append(f"[{c}{c.upper()}]" + sub)
        rest = max_len - depth - 1
        if rest >= 0:
            alts.append(alnum_except(children | {c.upper() for c in children}) + f"[{_ALNUM}]{{0,{rest}}}")
        body = "(?:" + "|".join(alts) + ")" if alts else ""
        return f"{body}?" if depth > 0 and body else body

    return node_regex(trie, 0)


WORD_PATTERN = _word_not_in(LEVELS, MAX_WORD_LEN)
EXPLANATION_PATTERN = f"^{WORD_PATTERN}(?:{_SEP}{{1,3}}{WORD_PATTERN}){{0,{MAX_WORDS - 1}}}{_SEP}?$"
MAX_EXPLANATION_CHARS = MAX_WORD_LEN * MAX_WORDS + 3 * (MAX_WORDS - 1) + 1
_EXPLANATION_RE = re.compile(EXPLANATION_PATTERN)


def explanation_ok(text: str) -> bool:
    return bool(_EXPLANATION_RE.match(text))


def to_explanation(facts: list[str]) -> str:
    """Facts -> one explanation string within the pattern (used for training targets)."""
    words = re.sub(r"[^A-Za-z0-9 ,;:.%()'\-]", " ", "; ".join(facts)).split()
    text = " ".join(w[:MAX_WORD_LEN] for w in words[:MAX_WORDS])
    for level in LEVELS:  # facts never use level words; this keeps that true for user data
        text = re.sub(rf"\b{level}[A-Za-z0-9]*", "-", text, flags=re.IGNORECASE)
    text = re.sub(r"[ ,;:.%()'\-]{4,}", "; ", text).lstrip(" ,;:.%()'-").rstrip(" ,;:-")
    return text if explanation_ok(text) else "no finding"


class Evidence(BaseModel):
    """An image region that drove a metric's score (from the model's damage map of the metric, or
    its MUST routing map: casiqa.evidence)."""

    model_config = ConfigDict(extra="forbid")
    box: tuple[float, float, float, float] = Field(description="x0, y0, x1, y1 as fractions of the image")
    weight: float = Field(ge=0.0, le=1.0, description="share of the metric's evidence-map mass inside the box")
    damage: float | None = Field(default=None, ge=0.0, le=1.0, description=(
        "the damage map's peak inside the box: how damaged the place looks (0 intact, 1 as severe as a failure "
        "gets); null for boxes from a routing map, which says where the model looked, not how damaged it is"))

    @model_validator(mode="after")
    def _ordered(self) -> Evidence:
        x0, y0, x1, y1 = self.box
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            raise ValueError(f"box {self.box} is not an ordered box inside [0, 1]")
        return self


class MetricAssessment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    score: float = Field(ge=SCORE_MIN, le=SCORE_MAX, description="expected score from the metric head, 1..5")
    level: Level = Field(description="the level nearest the score")
    confidence: float = Field(ge=0.0, le=1.0, description="1 - normalised entropy of the head's level distribution")
    explanation: str = Field(pattern=EXPLANATION_PATTERN, max_length=MAX_EXPLANATION_CHARS)
    evidence: list[Evidence] = Field(default_factory=list, max_length=3)

    @model_validator(mode="after")
    def _level_matches_score(self) -> MetricAssessment:
        if self.level != level_of(self.score):
            raise ValueError(f"level {self.level!r} contradicts score {self.score} ({level_of(self.score)!r})")
        return self


MetricsReport = create_model(
    "MetricsReport", __config__=ConfigDict(extra="forbid"), **{m: (MetricAssessment, ...) for m in METRICS}
)


class Assessment(BaseModel):
    """What `python -m agent.assess` prints: one object per assessed image."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[SCHEMA_VERSION] = SCHEMA_VERSION
    metrics: MetricsReport  # type: ignore[valid-type]
    auxiliary_images: list[Literal[AUX_ROLES]] = Field(default_factory=list)  # type: ignore[valid-type]
    model_id: str


@cache
def generation_model(levels: tuple[str, ...]) -> type[BaseModel]:
    """The JSON object the LM writes, with each metric's level pinned to the head's level
    (`levels` in METRICS order). Cached: one compiled grammar per level combination."""
    if len(levels) != len(METRICS) or any(lv not in LEVELS for lv in levels):
        raise ValueError(f"need one level of {LEVELS} per metric, got {levels}")
    fields = {}
    for metric, level in zip(METRICS, levels, strict=True):
        item = create_model(
            f"Written_{metric}_{level}",
            __config__=ConfigDict(extra="forbid"),
            level=(Literal[level], ...),
            # no max_length here: Outlines drops a string's pattern when a length bound is present
            # (outlines-core 0.2.14); the pattern bounds the length by itself.
            explanation=(str, Field(pattern=EXPLANATION_PATTERN)),
        )
        fields[metric] = (item, ...)
    return create_model("Written_" + "_".join(levels), __config__=ConfigDict(extra="forbid"), **fields)


def json_schema() -> dict:
    return Assessment.model_json_schema()
