"""Interventional devices: the catheter (edge of frame -> ostium) and the guidewire inside it.

Sizes at 512 px over a ~90 mm field (~0.18 mm/px, the zoom at which the real frames in
../shared/real show their vessels): a 6 F guiding catheter is 2 mm across (~5 px radius), a
0.014" coronary guidewire 0.36 mm (~1 px radius) with a ~15-20 mm radio-opaque distal tip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from casiqa.phantom.anatomy import VesselTree
from casiqa.phantom.geometry import normals, resample, smooth_noise


@dataclass
class Devices:
    wire: np.ndarray        # [N, 2] guidewire centre line, ostium -> distal tip
    wire_radius: float      # px
    tip_length: float       # px of radio-opaque distal tip
    wire_branch: str        # branch code the wire ends in
    wire_end: float         # how far down that branch the tip sits (0..1)
    catheter: np.ndarray    # [M, 2] catheter centre line, ostium -> frame edge
    catheter_radius: float  # px


def _catheter(rng: np.random.Generator, tree: VesselTree, size: int) -> np.ndarray:
    """From the ostium, coaxial with the first vessel but reversed, sweeping down out of frame
    (the catheter comes up the descending aorta and hooks into the ostium)."""
    first = tree.branches[0].points
    d = first[min(8, len(first) - 1)] - first[0]
    back = np.arctan2(-d[1], -d[0])
    target = np.deg2rad(90.0 + rng.uniform(-20, 20))  # heading down the frame
    # shortest turn from `back` to `target`, approached exponentially over ~`decay` px
    delta = (target - back + np.pi) % (2 * np.pi) - np.pi
    decay = rng.uniform(40, 90) * size / 512
    n = int(2.0 * size)
    s = np.arange(n, dtype=np.float64)
    theta = target - delta * np.exp(-s / decay) + 0.08 * smooth_noise(rng, n, 60)
    pts = first[0][None, :] + np.concatenate([[[0.0, 0.0]], np.cumsum(np.stack([np.cos(theta), np.sin(theta)], 1), 0)[:-1]])
    margin = 10
    outside = (pts < -margin).any(axis=1) | (pts > size + margin).any(axis=1)
    end = int(np.argmax(outside)) if outside.any() else n
    return pts[: max(end, 2)]


def make_devices(rng: np.random.Generator, tree: VesselTree, size: int) -> Devices:
    """Place a catheter at the ostium and a guidewire down a main vessel (or a diagonal)."""
    k = size / 512.0
    if tree.system == "left":
        choices, probs = ["LAD", "LCX", "D1"], [0.55, 0.3, 0.15]
    else:
        choices, probs = ["RCA", "PDA"], [0.75, 0.25]
    code = str(rng.choice(choices, p=probs))
    i = tree.index(code)
    end = float(rng.uniform(0.6, 0.95))
    branch = tree.branches[i]
    path = tree.path_to(i, int(end * (len(branch.points) - 1)))
    path, _ = resample(path, None, 1.0)
    # The wire rides inside the lumen, off-axis by up to ~a third of the local radius.
    offset = 0.8 * k * smooth_noise(rng, len(path), 50) * np.linspace(0.3, 1.0, len(path))
    wire = path + normals(path) * offset[:, None]
    return Devices(
        wire=wire,
        wire_radius=float(rng.uniform(0.8, 1.0) * k),
        tip_length=float(rng.uniform(70, 110) * k),
        wire_branch=code,
        wire_end=end,
        catheter=_catheter(rng, tree, size),
        catheter_radius=float(rng.uniform(4.5, 5.5) * k),
    )
