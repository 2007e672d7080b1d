"""The one source of truth for metric names, level words and the score scale.

Every other module (phantom ground truth, folder format, schema, prompts, evals) imports these
names; nothing else spells them out.
"""

from __future__ import annotations

METRICS: tuple[str, ...] = (
    "guidewire_visibility",
    "branch_discernibility",
    "artifact_interference",
)

# Five levels, worst to best; level i (0-based) stands for score i + 1 (Q-Align / DeQA-Score convention).
LEVELS: tuple[str, ...] = ("bad", "poor", "fair", "good", "excellent")

SCORE_MIN, SCORE_MAX = 1.0, 5.0
SCORE_DECIMALS = 3  # reports carry scores to this many decimals; levels are read from that value

# Human-readable names, for explanations and the UI.
METRIC_TITLES: dict[str, str] = {
    "guidewire_visibility": "guidewire visibility",
    "branch_discernibility": "branch discernibility",
    "artifact_interference": "artifact interference",
}


def level_index(score: float) -> int:
    """Index (0..4) of the level nearest to a score on the 1..5 scale."""
    if not SCORE_MIN <= score <= SCORE_MAX:
        raise ValueError(f"score {score!r} outside [{SCORE_MIN}, {SCORE_MAX}]")
    # Nearest level; a tie (x.5) goes up, so that 1.5 -> poor, 4.5 -> excellent.
    return min(int(score - SCORE_MIN + 0.5), len(LEVELS) - 1)


def level_of(score: float) -> str:
    """The level word nearest to a score on the 1..5 scale."""
    return LEVELS[level_index(score)]


def level_score(level: str) -> float:
    """The score a level word stands for (bad = 1 ... excellent = 5)."""
    try:
        return SCORE_MIN + LEVELS.index(level)
    except ValueError:
        raise ValueError(f"unknown level {level!r}; expected one of {', '.join(LEVELS)}") from None


DAMAGED_AT = "fair"  # a level this low or lower says the structure is damaged: its explanation names a failure


def says_damaged(level: str) -> bool:
    """Whether a level word says the metric's structure is damaged (DAMAGED_AT or worse), so that
    an explanation naming no failure would contradict it."""
    return level_score(level) <= level_score(DAMAGED_AT)


def kind_title(kind: str) -> str:
    """A failure kind's name in words ('wire_gaps' -> 'wire gaps'): how the findings in the prompt
    name it, and how each explanation fact begins, so that what the model writes first is what
    its findings heads found (docs/training-log.md, 2026-11-27, third session)."""
    return kind.replace("_", " ")


SEVERITY_WORDS = ("slight", "moderate", "severe")   # thirds of a failure's severity in [0, 1]
SEVERITY_ADVERBS = ("slightly", "moderately", "severely")


def severity_word(severity: float) -> str:
    """A severity in [0, 1] in words, by thirds: how the prompt's findings grade a failure."""
    return SEVERITY_WORDS[min(max(int(severity * 3), 0), 2)]


def severity_adverb(severity: float) -> str:
    """The same third as an adverb ('moderately'), for explanations written from the findings."""
    return SEVERITY_ADVERBS[SEVERITY_WORDS.index(severity_word(severity))]
