"""Reading angiograms from disk: any bit depth, grey or colour, checked before use.

Every failure is an `ImageError` whose message names the file and the problem, so that a
batch can report it in place of that row and go on.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 64_000_000      # an 8k x 8k detector frame; more is a decompression bomb, not an angiogram
ASPECT_TOLERANCE = 0.02      # auxiliary images must match the target's aspect ratio within 2 %


class ImageError(ValueError):
    """An image that cannot be assessed; the message names the file."""


def load_angiogram(path: str | Path) -> np.ndarray:
    """Grey float32 [H, W] in [0, 1] from an 8- or 16-bit, grey or colour image file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise ImageError(f"{path}: {w}x{h} pixels is over the {MAX_PIXELS:,} limit (decompression bomb?)")
                if w == 0 or h == 0:
                    raise ImageError(f"{path}: empty image ({w}x{h})")
                im.load()
                return to_grey(im, str(path))
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: not a readable image ({type(e).__name__})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: corrupt or truncated image ({e})") from None


def to_grey(im: Image.Image, name: str = "image") -> np.ndarray:
    """PIL image of any common mode -> grey float32 [H, W] in [0, 1]."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        a = a / top
    elif mode == "F":
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    elif mode in ("1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "I;16S"):
        a = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    else:
        raise ImageError(f"{name}: unsupported image mode {mode!r}")
    if a.ndim != 2 or a.size == 0:
        raise ImageError(f"{name}: expected a 2-D image, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ImageError(f"{name}: image holds NaN or infinite values")
    return np.clip(a, 0.0, 1.0).astype(np.float32)


def check_aligned(target: np.ndarray, aux: np.ndarray, role: str, name: str = "") -> None:
    """Auxiliary images are assumed aligned with the target: same aspect ratio (any resolution)."""
    rt = target.shape[1] / target.shape[0]
    ra = aux.shape[1] / aux.shape[0]
    if abs(ra - rt) / rt > ASPECT_TOLERANCE:
        raise ImageError(f"{name or role}: {role} image aspect ratio {ra:.3f} ({aux.shape[1]}x{aux.shape[0]}) differs "
                         f"from the target's {rt:.3f} ({target.shape[1]}x{target.shape[0]}); aux images must be aligned")


def to_rgb(grey: np.ndarray) -> Image.Image:
    """Grey [H, W] in [0, 1] -> 8-bit RGB PIL image (what the vision encoder takes)."""
    return Image.fromarray(np.round(np.clip(grey, 0, 1) * 255).astype(np.uint8)).convert("RGB")


def to_model_image(grey: np.ndarray) -> Image.Image:
    """Grey [H, W] in [0, 1] -> RGB PIL image with its format set (Outlines needs one)."""
    rgb = to_rgb(grey)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out
