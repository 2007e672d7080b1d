"""Ground truth: severities -> per-metric quality -> a simulated rater panel -> MOS, std, level.

Quality of metric m:  q_m = 5 - 4 * D_m,  D_m = 1 - prod_k (1 - w_k * s_k)
over the failures k of m's family (severity s_k, kind weight w_k = damage at full severity).
D is a probabilistic OR: 0 with no failure, monotone increasing in every severity, and a
failure of another family never enters it (what one family's failure does to another's structures
comes as records of that family: failures/derived.py). Raters then score q the way a panel does (cf. the
ITU-R BT.500 / MOS protocol): each rater has a personal bias and per-image noise that is larger
mid-scale than at the ends, and gives an integer 1..5. MOS = mean, std = sample std.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from casiqa.metrics import METRICS, SCORE_MAX, SCORE_MIN, level_of
from casiqa.phantom.config import PhantomConfig
from casiqa.phantom.failures import KINDS, Failure


def damage(failures: list[Failure], metric: str) -> float:
    keep = 1.0
    for f in failures:
        if f.metric == metric:
            keep *= 1.0 - KINDS[f.kind].weight * float(np.clip(f.severity, 0.0, 1.0))
    return 1.0 - keep


def quality(failures: list[Failure], metric: str) -> float:
    """Noise-free quality on the 1..5 scale."""
    return SCORE_MAX - (SCORE_MAX - SCORE_MIN) * damage(failures, metric)


@dataclass(frozen=True)
class Opinion:
    quality: float   # noise-free truth
    mos: float       # mean opinion score of the panel
    std: float       # panel standard deviation
    level: str       # level nearest the MOS
    ratings: tuple[int, ...]

    def to_json(self) -> dict:
        return {"mos": round(self.mos, 4), "std": round(self.std, 4), "level": self.level,
                "quality": round(self.quality, 4), "ratings": list(self.ratings)}


def rate(q: float, rng: np.random.Generator, cfg: PhantomConfig) -> Opinion:
    """A simulated panel's opinion of quality q. The panel's draws come from `rng` alone, so for
    a fixed rng the MOS is non-decreasing in q."""
    bias = rng.normal(0.0, cfg.rater_bias, cfg.n_raters)
    eps = rng.standard_normal(cfg.n_raters)
    mid = 1.0 - abs(q - 3.0) / 2.0            # 1 mid-scale, 0 at the ends
    sigma = cfg.rater_noise * (1.0 + 0.6 * mid)
    ratings = np.clip(np.round(q + bias + sigma * eps), SCORE_MIN, SCORE_MAX).astype(int)
    mos = float(ratings.mean())
    return Opinion(q, mos, float(ratings.std(ddof=1)), level_of(mos), tuple(int(r) for r in ratings))


def ground_truth(failures: list[Failure], rng: np.random.Generator, cfg: PhantomConfig) -> dict[str, Opinion]:
    """Per metric opinion; each metric's panel draws from its own child stream of `rng`."""
    streams = rng.spawn(len(METRICS))
    return {m: rate(quality(failures, m), s, cfg) for m, s in zip(METRICS, streams, strict=True)}
