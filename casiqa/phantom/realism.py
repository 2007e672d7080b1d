"""Image statistics that compare phantom angiograms with real ones (pure functions).

Every statistic is measured the same way on both sides, on a float image in [0, 1] (vessels
dark, as displayed) and its binary vessel mask, at the same pixel grid.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Statistic name -> (unit / how to read it). The order is the table's order.
STATISTICS: dict[str, str] = {
    "fov_fraction": "share of the frame inside the collimated field of view",
    "intensity_p05": "5th percentile of grey level inside the field (0..1)",
    "intensity_p50": "median grey level inside the field (0..1)",
    "intensity_p95": "95th percentile of grey level inside the field (0..1)",
    "vessel_contrast": "Weber contrast of vessels against a 2-5 px ring around them",
    "vessel_fraction": "vessel area / field area",
    "width_median_px": "median vessel diameter on the centre line (px)",
    "width_p90_px": "90th percentile vessel diameter (px)",
    "noise_sigma": "Immerkaer noise estimate in the background (grey levels of 255)",
    "spectrum_slope": "log-log slope of the radial power spectrum, 0.02-0.25 cycles/px",
}


def field_of_view(image: np.ndarray) -> np.ndarray:
    """Boolean mask of the collimated field: the largest bright region, holes filled."""
    smooth = ndimage.gaussian_filter(image.astype(np.float64), 1.5)
    inside = smooth > 0.1  # outside the collimator real frames sit at ~0.06
    labels, n = ndimage.label(inside)
    if n == 0:
        return inside
    largest = 1 + int(np.argmax(ndimage.sum(inside, labels, range(1, n + 1))))
    return ndimage.binary_fill_holes(labels == largest)


def noise_sigma(image: np.ndarray, region: np.ndarray) -> float:
    """Gaussian noise std by Immerkaer (1996): sqrt(pi/2) / 6 * mean |I * N| over the region."""
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    response = ndimage.convolve(image.astype(np.float64), kernel, mode="reflect")
    region = ndimage.binary_erosion(region, iterations=2)
    if not region.any():
        return float("nan")
    return float(np.sqrt(np.pi / 2) / 6 * np.abs(response[region]).mean())


def spectrum_slope(image: np.ndarray, fov: np.ndarray) -> float:
    """Slope of log power vs log frequency over a Hann-windowed square inside the field."""
    ys, xs = np.nonzero(fov)
    cy, cx = ys.mean(), xs.mean()
    radius = np.sqrt(fov.sum() / np.pi)
    half = int(radius / np.sqrt(2)) - 2
    if half < 16:
        return float("nan")
    crop = image[int(cy) - half : int(cy) + half, int(cx) - half : int(cx) + half].astype(np.float64)
    crop = crop - crop.mean()
    n = crop.shape[0]
    window = np.outer(np.hanning(n), np.hanning(crop.shape[1]))
    power = np.abs(np.fft.fftshift(np.fft.fft2(crop * window))) ** 2
    fy, fx = np.meshgrid(np.fft.fftshift(np.fft.fftfreq(n)), np.fft.fftshift(np.fft.fftfreq(crop.shape[1])), indexing="ij")
    freq = np.hypot(fy, fx)
    bins = np.geomspace(0.02, 0.25, 12)
    idx = np.digitize(freq.ravel(), bins)
    centres, means = [], []
    for b in range(1, len(bins)):
        sel = idx == b
        if sel.any():
            centres.append(np.sqrt(bins[b - 1] * bins[b]))
            means.append(power.ravel()[sel].mean())
    slope, _ = np.polyfit(np.log(centres), np.log(np.maximum(means, 1e-12)), 1)
    return float(slope)


def vessel_widths(mask: np.ndarray) -> np.ndarray:
    """Vessel diameters (px) sampled on the ridge of the distance transform (the centre line)."""
    dist = ndimage.distance_transform_edt(mask)
    ridge = mask & (dist >= ndimage.maximum_filter(dist, size=3))
    return 2.0 * dist[ridge] - 1.0  # edt counts the centre pixel itself: diameter = 2r - 1


def image_statistics(image: np.ndarray, vessel_mask: np.ndarray) -> dict[str, float]:
    """All STATISTICS for one angiogram (float in [0, 1], vessels dark) and its vessel mask."""
    if image.shape != vessel_mask.shape:
        raise ValueError(f"image {image.shape} and mask {vessel_mask.shape} differ in shape")
    image = image.astype(np.float64)
    vessel = vessel_mask.astype(bool)
    fov = field_of_view(image)
    inner = ndimage.binary_erosion(fov, iterations=6)
    vessel_in = vessel & inner
    near = ndimage.binary_dilation(vessel, iterations=5) & ~ndimage.binary_dilation(vessel, iterations=2) & inner
    background = inner & ~ndimage.binary_dilation(vessel, iterations=3)
    p05, p50, p95 = np.percentile(image[fov], [5, 50, 95])
    widths = vessel_widths(vessel)
    bg_level = np.median(image[near]) if near.any() else float("nan")
    vessel_level = np.median(image[vessel_in]) if vessel_in.any() else float("nan")
    return {
        "fov_fraction": float(fov.mean()),
        "intensity_p05": float(p05),
        "intensity_p50": float(p50),
        "intensity_p95": float(p95),
        "vessel_contrast": float((bg_level - vessel_level) / max(bg_level, 1e-6)),
        "vessel_fraction": float(vessel.sum() / max(fov.sum(), 1)),
        "width_median_px": float(np.median(widths)) if widths.size else float("nan"),
        "width_p90_px": float(np.percentile(widths, 90)) if widths.size else float("nan"),
        "noise_sigma": 255.0 * noise_sigma(image, background),
        "spectrum_slope": spectrum_slope(image, fov),
    }
