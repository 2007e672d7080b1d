"""Phantom configuration: one dataclass, loadable from a YAML recipe."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PhantomConfig:
    size: int = 512                 # frame side in px (square, like most C-arm detectors)
    bit_depth: int = 8              # 8 or 16 bit grey PNG
    variants_per_anatomy: int = 3   # synthetic angiograms per live frame (like several generators)
    clean_fraction: float = 0.2     # share of (case, metric) pairs with no failure of that family
    second_failure: float = 0.35    # chance of a second failure within a family
    n_raters: int = 7               # simulated rater panel size
    rater_bias: float = 0.25        # std of each rater's personal offset (score units)
    rater_noise: float = 0.35       # std of a rater's per-image noise at the scale's ends
    photons: float = 6.0e4          # detected quanta per pixel without attenuation (dose)
    detector_blur: float = 1.0      # Gaussian detector blur sigma, px at 512

    def __post_init__(self) -> None:
        if self.size < 64 or self.size > 4096:
            raise ValueError(f"size must be in 64..4096, got {self.size}")
        if self.bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {self.bit_depth}")
        if self.variants_per_anatomy < 1:
            raise ValueError("variants_per_anatomy must be >= 1")
        for name in ("clean_fraction", "second_failure"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.n_raters < 2:
            raise ValueError("n_raters must be >= 2 (a standard deviation needs two ratings)")
