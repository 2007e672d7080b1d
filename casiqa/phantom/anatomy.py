"""Coronary-like vessel trees: left system (LM, LAD, LCx and their branches) or right coronary.

Geometry follows textbook coronary anatomy in a frontal projection (y down): the left main
stem splits into the LAD, which runs towards the apex with diagonal and septal side branches,
and the LCx, which follows the atrioventricular groove and gives obtuse marginals; the RCA
runs a C-shaped course to the crux, giving acute marginals and ending in the PDA and
posterolateral branch. Radii taper along each branch and split at bifurcations by Murray's law
(r_parent^3 = r_1^3 + r_2^3; Murray 1926). All lengths are in pixels at the render size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from casiqa.phantom.geometry import grow_curve, heading_at

# Branch code -> clinical name used in explanations.
CLINICAL_NAMES = {
    "LM": "left main", "LAD": "LAD", "LCX": "LCx", "RCA": "RCA", "PDA": "posterior descending artery",
    "PLB": "posterolateral branch", "CONUS": "conus branch",
}
ORDINALS = ("first", "second", "third", "fourth")
SIDE_NAMES = {"D": "diagonal", "S": "septal", "OM": "obtuse marginal", "AM": "acute marginal"}


def clinical_name(code: str) -> str:
    """'D2' -> 'second diagonal', 'LAD' -> 'LAD', 'D2-1' -> 'branch of the second diagonal'."""
    if "-" in code:
        return f"branch of the {clinical_name(code.split('-')[0])}"
    if code in CLINICAL_NAMES:
        return CLINICAL_NAMES[code]
    prefix, number = code.rstrip("0123456789"), code[len(code.rstrip("0123456789")):]
    return f"{ORDINALS[int(number) - 1]} {SIDE_NAMES[prefix]}"


@dataclass
class Branch:
    code: str                 # "LAD", "D1", "OM2", ...
    points: np.ndarray        # [N, 2] centre line (x, y) in px, 1 px steps
    radii: np.ndarray         # [N] lumen radius in px
    parent: int | None = None  # index of the parent branch in the tree
    parent_index: int = 0     # point index on the parent where this branch leaves
    main: bool = False        # main vessel (LM, LAD, LCx, RCA) rather than a side branch

    @property
    def name(self) -> str:
        return clinical_name(self.code)


@dataclass
class VesselTree:
    system: str                                   # "left" or "right"
    branches: list[Branch] = field(default_factory=list)
    stenoses: list[dict] = field(default_factory=list)

    def index(self, code: str) -> int:
        return next(i for i, b in enumerate(self.branches) if b.code == code)

    def descendants(self, i: int) -> list[int]:
        """Indices of branch i and every branch downstream of it."""
        out = [i]
        for j, b in enumerate(self.branches):
            if b.parent is not None and b.parent in out and j not in out:
                out.extend(self.descendants(j))
        return sorted(set(out))

    def path_to(self, i: int, end_index: int) -> np.ndarray:
        """Centre line from the ostium down branch i to point `end_index` (for the guidewire)."""
        b = self.branches[i]
        own = b.points[: end_index + 1]
        if b.parent is None:
            return own
        return np.concatenate([self.path_to(b.parent, b.parent_index), own[1:]])


def _taper(n: int, r0: float, r1: float) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    return r0 + (r1 - r0) * t**0.8


def _deg(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.deg2rad(rng.uniform(lo, hi)))


def _side_branches(rng, tree, parent, prefix, count, t_range, angle_deg, length, r_frac, k, sign):
    """Grow `count` side branches off branch `parent`, thinning the parent by Murray's law."""
    p = tree.branches[parent]
    ts = np.sort(rng.uniform(*t_range, size=count))
    for n, t in enumerate(ts, start=1):
        idx = int(t * (len(p.points) - 1))
        r_parent = p.radii[idx]
        r_side = max(r_parent * rng.uniform(*r_frac), 3.8 * k)
        # Murray: the parent continues with (r^3 - r_side^3)^(1/3)
        r_cont = np.cbrt(max(r_parent**3 - r_side**3, (0.5 * r_parent) ** 3))
        p.radii[idx:] *= r_cont / r_parent
        heading = heading_at(p.points, idx) + sign * _deg(rng, *angle_deg)
        pts = grow_curve(rng, p.points[idx], heading, rng.uniform(*length) * k, bend=rng.normal(0, 0.15),
                         wander=0.25, tortuosity=rng.uniform(0.1, 0.45), wavelength=rng.uniform(18, 34) * k)
        radii = _taper(len(pts), r_side, min(rng.uniform(2.8, 3.4) * k, r_side))
        tree.branches.append(Branch(f"{prefix}{n}", pts, radii, parent, idx))


def _twigs(rng: np.random.Generator, tree: VesselTree, k: float) -> None:
    """Second-order branches: about half the long side branches give off one small twig."""
    for i in range(len(tree.branches)):
        b = tree.branches[i]
        if b.main or "-" in b.code or len(b.points) < 100 * k or rng.random() < 0.5:
            continue
        sign = float(rng.choice([-1.0, 1.0]))
        _side_branches(rng, tree, i, f"{b.code}-", 1, (0.25, 0.6), (25, 50), (50, 110), (0.6, 0.8), k, sign)


def _left_system(rng: np.random.Generator, ostium: np.ndarray, k: float) -> VesselTree:
    tree = VesselTree("left")
    h0 = _deg(rng, -15, 20)
    r_lm = rng.uniform(9.5, 11.5) * k
    lm = grow_curve(rng, ostium, h0, rng.uniform(25, 55) * k, wander=0.05)
    tree.branches.append(Branch("LM", lm, _taper(len(lm), r_lm, 0.95 * r_lm), main=True))
    r_lad = 0.95 * r_lm * rng.uniform(0.76, 0.86)
    r_lcx = np.cbrt(max((0.95 * r_lm) ** 3 - r_lad**3, 1.0))
    lad = grow_curve(rng, lm[-1], h0 + _deg(rng, 30, 55), rng.uniform(330, 430) * k, bend=rng.uniform(0.1, 0.3),
                     wander=0.2, tortuosity=rng.uniform(0.1, 0.35), wavelength=rng.uniform(25, 45) * k)
    tree.branches.append(Branch("LAD", lad, _taper(len(lad), r_lad, rng.uniform(3.0, 3.8) * k), 0, len(lm) - 1, True))
    lcx = grow_curve(rng, lm[-1], h0 + _deg(rng, 95, 130), rng.uniform(220, 320) * k, bend=rng.uniform(-0.25, 0.1),
                     wander=0.2, tortuosity=rng.uniform(0.05, 0.3), wavelength=rng.uniform(25, 45) * k)
    tree.branches.append(Branch("LCX", lcx, _taper(len(lcx), r_lcx, rng.uniform(3.0, 3.8) * k), 0, len(lm) - 1, True))
    _side_branches(rng, tree, 1, "D", int(rng.integers(2, 5)), (0.12, 0.65), (30, 55), (120, 230), (0.5, 0.75), k, +1)
    _side_branches(rng, tree, 1, "S", int(rng.integers(1, 3)), (0.08, 0.4), (45, 75), (50, 110), (0.35, 0.5), k, -1)
    _side_branches(rng, tree, 2, "OM", int(rng.integers(2, 5)), (0.2, 0.8), (30, 60), (120, 230), (0.5, 0.75), k, -1)
    _twigs(rng, tree, k)
    return tree


def _right_system(rng: np.random.Generator, ostium: np.ndarray, k: float) -> VesselTree:
    tree = VesselTree("right")
    length = rng.uniform(450, 560) * k
    turn = _deg(rng, 120, 170)  # total turn of the C-shaped course
    rca = grow_curve(rng, ostium, _deg(rng, -20, 10), length, bend=turn / length * 100.0, wander=0.15,
                     tortuosity=rng.uniform(0.05, 0.25), wavelength=rng.uniform(30, 50) * k)
    r0 = rng.uniform(9.0, 11.0) * k
    tree.branches.append(Branch("RCA", rca, _taper(len(rca), r0, rng.uniform(3.0, 3.8) * k), main=True))
    _side_branches(rng, tree, 0, "CONUS", 1, (0.03, 0.08), (40, 70), (50, 100), (0.3, 0.4), k, -1)
    tree.branches[-1].code = "CONUS"
    _side_branches(rng, tree, 0, "AM", int(rng.integers(2, 5)), (0.3, 0.7), (40, 75), (100, 190), (0.45, 0.65), k, -1)
    _side_branches(rng, tree, 0, "PDA", 1, (0.86, 0.93), (20, 45), (120, 190), (0.55, 0.75), k, +1)
    tree.branches[-1].code = "PDA"
    _side_branches(rng, tree, 0, "PLB", 1, (0.95, 0.98), (25, 50), (80, 150), (0.55, 0.75), k, -1)
    tree.branches[-1].code = "PLB"
    _twigs(rng, tree, k)
    return tree


def _add_stenosis(rng: np.random.Generator, tree: VesselTree) -> None:
    """A focal narrowing (30-70 % diameter) on one main vessel: anatomy, not a generator failure."""
    mains = [i for i, b in enumerate(tree.branches) if b.main and len(b.points) > 80]
    i = int(rng.choice(mains))
    b = tree.branches[i]
    centre = int(rng.uniform(0.2, 0.6) * len(b.points))
    width = rng.uniform(4, 9)
    severity = rng.uniform(0.3, 0.7)
    s = np.arange(len(b.points))
    b.radii *= 1.0 - severity * np.exp(-0.5 * ((s - centre) / width) ** 2)
    tree.stenoses.append({"branch": b.code, "index": centre, "severity": round(float(severity), 3)})


def _transform(tree: VesselTree, rng: np.random.Generator, size: int) -> None:
    """Random view: rotation, scale, shift and a left-right flip, about the image centre."""
    angle = _deg(rng, -20, 20)
    scale = rng.uniform(0.9, 1.1)
    flip = -1.0 if rng.random() < 0.5 else 1.0
    shift = rng.uniform(-0.05, 0.05, size=2) * size
    c = np.array([size / 2, size / 2])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.diag([flip, 1.0])
    for b in tree.branches:
        b.points = (b.points - c) @ rot.T + c + shift
        b.radii = b.radii * scale


def make_tree(rng: np.random.Generator, size: int) -> VesselTree:
    """A random coronary tree (left system 70 %, right 30 %) in a `size` x `size` frame."""
    k = size / 512.0
    ostium = np.array([rng.uniform(0.22, 0.36), rng.uniform(0.14, 0.24)]) * size
    if rng.random() < 0.7:
        tree = _left_system(rng, ostium, k)
    else:
        tree = _right_system(rng, ostium, k)
    if rng.random() < 0.35:
        _add_stenosis(rng, tree)
    _transform(tree, rng, size)
    return tree
