"""What one family's failure does to another family's structures, as records of the family it harms.

The phantom draws each metric's failures on their own, but an image has one set of pixels:
over-smoothing, an artefact, blurs whatever lies under it, the guidewire and the vessels too.
The metrics' definitions (docs: DESIGN) ask whether the wire is seen "sharp" and whether the
vessels are told apart, whatever made them blurred, so a rater marks both down. This module
states that as derived failure records: an over-smoothing over part of the wire adds a
`wire_blur` of the severity whose blur matches the smoothing's (sigma 3 px at 512 px is the
wire blur of severity 0.6, the vessel blur of severity 0.4), scaled by how strongly the
smoothing covers the structure on average (its mask over the structure's pixels). A derived
record carries `derived_from` in its params: it enters its metric's label, findings and facts
like any failure of its kind, and the renderer skips it (the smoothing already drew the blur).

Artefacts that lie on top of the image (blotches, streaks, noise bursts, ...) leave the
structures as they were and stay the artefact metric's alone.
"""

from __future__ import annotations

import numpy as np

from casiqa.phantom.failures.artifacts import SMOOTH_SIGMA, smooth_mask
from casiqa.phantom.failures.base import Failure, bbox_of_pixels
from casiqa.phantom.failures.branches import BLUR_SIGMA as VESSEL_BLUR_SIGMA
from casiqa.phantom.failures.guidewire import BLUR_SIGMA as WIRE_BLUR_SIGMA
from casiqa.phantom.render import Scene

MIN_SEVERITY = 0.05     # the least severity the phantom samples: below it, no derived record
COVERED = 0.15          # a structure pixel whose mask is above this is inside the derived record's box


def blur_equivalent(sigma: float, blur_sigma: tuple[float, float]) -> float:
    """The severity of a blur kind (sigma = a + b * severity, px at 512 px) with Gaussian `sigma`."""
    a, b = blur_sigma
    return float(np.clip((sigma - a) / b, 0.0, 1.0))


def derived_failures(failures: list[Failure], scene: Scene) -> list[Failure]:
    """The records that `failures` imply for other families (see the module's docstring)."""
    out = []
    targets = (("wire_blur", WIRE_BLUR_SIGMA, scene.wire.index, lambda f: "guidewire"),
               ("vessel_blur", VESSEL_BLUR_SIGMA, np.flatnonzero(scene.vessel_mask()), lambda f: f.location))
    for f in failures:
        if f.kind != "over_smoothing" or is_derived(f):
            continue
        mask = smooth_mask(scene, f).reshape(-1)
        for kind, blur_sigma, index, where in targets:
            if index.size == 0:
                continue
            cover = float(mask[index].mean())
            severity = blur_equivalent(SMOOTH_SIGMA, blur_sigma) * cover
            if severity < MIN_SEVERITY:
                continue
            under = index[mask[index] > COVERED]
            out.append(Failure(kind, round(severity, 4), where(f), bbox_of_pixels(under, scene.size),
                               {"derived_from": f.kind, "cx": f.params["cx"], "cy": f.params["cy"]}))
    return out


def is_derived(f: Failure) -> bool:
    return bool(f.params.get("derived_from"))
