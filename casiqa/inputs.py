"""One case to assess: the target image and its optional auxiliary images (no torch needed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from casiqa.imaging import check_aligned


@dataclass
class AssessInput:
    target: np.ndarray                  # grey [H, W] in [0, 1]: the synthetic angiogram
    live: np.ndarray | None = None
    reference: np.ndarray | None = None
    name: str = ""

    def aux(self) -> list[tuple[str, np.ndarray]]:
        return [(r, a) for r, a in (("live", self.live), ("reference", self.reference)) if a is not None]

    def check(self) -> None:
        for role, image in self.aux():
            check_aligned(self.target, image, role, self.name)
