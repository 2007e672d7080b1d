"""X-ray-like image formation: attenuation -> transmitted intensity -> detector -> display.

Beer-Lambert: I = I0 exp(-sum mu_i L_i). The detector blurs (Gaussian PSF), counts quanta
(Poisson, here its Gaussian limit since counts are in the thousands) and adds electronic
noise; the display takes the log (so attenuation is linear in grey level) and a window that
maps vessels dark on a bright background, as angiography systems show them. Outside the
circular collimator the frame is near black.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from casiqa.phantom.anatomy import VesselTree, make_tree
from casiqa.phantom.background import make_background
from casiqa.phantom.config import PhantomConfig
from casiqa.phantom.devices import Devices, make_devices
from casiqa.phantom.raster import TubeLayer, mask_of, tube_layer

OUTSIDE_LEVEL = 0.06  # grey level beyond the collimator, as measured on the real frames


@dataclass
class Scene:
    """Everything about one live frame that its live, reference and synthetic images share."""

    size: int
    tree: VesselTree
    devices: Devices
    background: np.ndarray            # [H, W] attenuation
    vessels: list[TubeLayer]          # one per branch, same order as tree.branches
    wire: TubeLayer
    catheter_wall: TubeLayer
    catheter_lumen: TubeLayer
    fov: np.ndarray                   # [H, W] soft collimator mask in [0, 1]
    mu_iodine: float                  # per px of contrast-filled lumen
    mu_wire: float
    mu_catheter: float
    window_centre: float = 0.5
    window_gain: float = 1.0
    log_median: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    def vessel_mask(self) -> np.ndarray:
        return mask_of(self.vessels, self.shape)

    def device_labels(self) -> np.ndarray:
        """uint8 [H, W]: 0 background, 1 catheter, 2 guidewire (the wire wins where they cross)."""
        out = mask_of([self.catheter_wall], self.shape).astype(np.uint8)
        out[mask_of([self.wire], self.shape)] = 2
        return out


def _fov(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2 + rng.uniform(-0.03, 0.03, size=2) * size
    radius = rng.uniform(0.6, 0.76) * size  # corners cut, as on the real 300 px frames
    r = np.hypot(xx - c[0], yy - c[1])
    return np.clip((radius - r) / 2.0 + 0.5, 0.0, 1.0)


def make_scene(rng: np.random.Generator, cfg: PhantomConfig) -> Scene:
    size, k = cfg.size, cfg.size / 512.0
    tree = make_tree(rng, size)
    devices = make_devices(rng, tree, size)
    shape = (size, size)
    vessels = [tube_layer(b.points, b.radii, shape) for b in tree.branches]
    wire_r = np.full(len(devices.wire), devices.wire_radius)
    cath = devices.catheter
    scene = Scene(
        size=size, tree=tree, devices=devices, background=make_background(rng, size), vessels=vessels,
        wire=tube_layer(devices.wire, wire_r, shape),
        catheter_wall=tube_layer(cath, np.full(len(cath), devices.catheter_radius), shape),
        catheter_lumen=tube_layer(cath, np.full(len(cath), 0.7 * devices.catheter_radius), shape),
        fov=_fov(rng, size),
        # attenuation per px scales with the pixel size: 1/k
        mu_iodine=rng.uniform(0.03, 0.055) / k, mu_wire=rng.uniform(0.7, 1.0) / k,
        mu_catheter=rng.uniform(0.03, 0.05) / k,
    )
    # Display window from the noise-free reference: median -> centre, 5-95 % spread -> target.
    log_ref = -attenuation(scene, iodine=contrast_iodine(scene), wire=None, catheter_fill=1.0)
    inside = scene.fov > 0.5
    p05, p50, p95 = np.percentile(log_ref[inside], [5, 50, 95])
    scene.log_median = float(p50)
    scene.window_centre = float(rng.uniform(0.45, 0.6))
    scene.window_gain = float(rng.uniform(0.28, 0.45) / max(p95 - p05, 1e-3))
    return scene


def contrast_iodine(scene: Scene, weights: list[np.ndarray | float] | None = None) -> np.ndarray:
    """Dense iodine path length [H, W]: every branch filled (or weighted per pixel)."""
    total = np.zeros(scene.shape, np.float32)
    for i, layer in enumerate(scene.vessels):
        total += layer.dense(scene.shape, 1.0 if weights is None else weights[i])
    return total


def attenuation(scene: Scene, iodine: np.ndarray | None, wire: np.ndarray | None,
                catheter_fill: float, catheter_scale: float = 1.0) -> np.ndarray:
    """Total attenuation [H, W]: background + iodine + wire + catheter (wall, iodine in the lumen)."""
    a = scene.background.copy()
    if iodine is not None:
        a += scene.mu_iodine * iodine
    if wire is not None:
        a += scene.mu_wire * wire
    cath = scene.mu_catheter * scene.catheter_wall.dense(scene.shape)
    if catheter_fill > 0:
        cath += catheter_fill * scene.mu_iodine * scene.catheter_lumen.dense(scene.shape)
    return a + catheter_scale * cath


def expose(scene: Scene, att: np.ndarray, rng: np.random.Generator, cfg: PhantomConfig) -> np.ndarray:
    """Attenuation -> displayed grey level in [0, 1] (float32), with blur and quantum noise."""
    k = scene.size / 512.0
    intensity = np.exp(-att).astype(np.float32)
    intensity = ndimage.gaussian_filter(intensity, cfg.detector_blur * k)
    lam = cfg.photons * intensity
    noisy = lam + np.sqrt(lam) * rng.standard_normal(lam.shape, dtype=np.float32)
    noisy += 2.0 * rng.standard_normal(lam.shape, dtype=np.float32)  # electronic noise, quanta
    log_i = np.log(np.maximum(noisy, 1.0) / cfg.photons)
    display = scene.window_centre + scene.window_gain * (log_i - scene.log_median)
    outside = OUTSIDE_LEVEL + 0.004 * rng.standard_normal(lam.shape, dtype=np.float32)
    return np.clip(scene.fov * display + (1.0 - scene.fov) * outside, 0.0, 1.0).astype(np.float32)


def quantize(display: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float [0, 1] -> uint8 or uint16 grey."""
    top = (1 << bit_depth) - 1
    return np.round(np.clip(display, 0.0, 1.0) * top).astype(np.uint8 if bit_depth == 8 else np.uint16)
