"""One anatomy -> its live frame, reference angiogram and several synthetic angiograms.

Everything is drawn from numpy child streams of SeedSequence([seed, anatomy]), so a case is
the same bytes whichever process builds it and in whatever order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from casiqa.metrics import METRICS
from casiqa.phantom.config import PhantomConfig
from casiqa.phantom.facts import explanation_facts
from casiqa.phantom.failures import Failure, extra_wire_mask, render, render_view, sample_failures
from casiqa.phantom.render import Scene, make_scene, quantize
from casiqa.phantom.scoring import Opinion, ground_truth


@dataclass
class Case:
    id: str
    anatomy: int
    variant: int
    images: dict[str, np.ndarray]     # live, reference, synthetic (grey), vessel_mask, device_mask, extra_wire_mask (uint8)
    failures: list[Failure]
    scores: dict[str, Opinion]
    facts: dict[str, list[str]]
    meta: dict

    def annotation(self) -> dict:
        """The JSON-able part (everything but the pixels)."""
        return {
            "id": self.id,
            "anatomy": self.anatomy,
            "variant": self.variant,
            "scores": {m: self.scores[m].to_json() for m in METRICS},
            "facts": self.facts,
            "failures": [f.to_json() for f in self.failures],
            "meta": self.meta,
        }


def case_id(seed: int, anatomy: int, variant: int) -> str:
    return f"s{seed}-a{anatomy:05d}-v{variant}"


def build_scene(seed: int, anatomy: int, cfg: PhantomConfig) -> tuple[Scene, list[np.random.Generator]]:
    """The scene of one anatomy and independent generators for everything drawn after it."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, anatomy]).spawn(3 + cfg.variants_per_anatomy)]
    return make_scene(streams[0], cfg), streams[1:]


def anatomy_cases(seed: int, anatomy: int, cfg: PhantomConfig) -> list[Case]:
    scene, streams = build_scene(seed, anatomy, cfg)
    live = quantize(render_view(scene, streams[0], cfg, contrast=False, wire=True), cfg.bit_depth)
    reference = quantize(render_view(scene, streams[1], cfg, contrast=True, wire=False), cfg.bit_depth)
    vessel_mask = scene.vessel_mask().astype(np.uint8) * 255
    device_mask = np.array([0, 128, 255], np.uint8)[scene.device_labels()]
    meta = {
        "system": scene.tree.system,
        "branches": [b.code for b in scene.tree.branches],
        "stenoses": scene.tree.stenoses,
        "wire_branch": scene.devices.wire_branch,
        "size": cfg.size,
        "bit_depth": cfg.bit_depth,
    }
    cases = []
    for v, rng in enumerate(streams[2:]):
        failure_rng, noise_rng, panel_rng = rng.spawn(3)
        failures = sample_failures(failure_rng, scene, cfg)
        view = render(scene, noise_rng, cfg, contrast=True, wire=True, failures=failures)
        images = {"live": live, "reference": reference, "synthetic": quantize(view.display, cfg.bit_depth),
                  "vessel_mask": vessel_mask, "device_mask": device_mask,
                  # a wire drawn where there is none (displaced, ghost): what a guidewire failure added
                  "extra_wire_mask": extra_wire_mask(view, scene).astype(np.uint8) * 255}
        cases.append(Case(case_id(seed, anatomy, v), anatomy, v, images, failures,
                          ground_truth(failures, panel_rng, cfg), explanation_facts(failures, scene), meta))
    return cases
