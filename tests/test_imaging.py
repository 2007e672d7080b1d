"""Reading angiograms of any depth and colour, and refusing what is not one."""

import numpy as np
import pytest
from PIL import Image

from casiqa.imaging import ImageError, check_aligned, load_angiogram


@pytest.mark.parametrize(
    ("mode", "array"),
    [
        ("L", np.full((20, 30), 128, np.uint8)),
        ("I;16", np.full((20, 30), 32896, np.uint16)),
        ("RGB", np.full((20, 30, 3), 128, np.uint8)),
        ("RGBA", np.full((20, 30, 4), 128, np.uint8)),
    ],
)
def test_depths_and_colours_normalise_to_grey(tmp_path, mode, array):
    path = tmp_path / "x.png"
    Image.fromarray(array).save(path)
    assert Image.open(path).mode == mode
    grey = load_angiogram(path)
    assert grey.shape == (20, 30) and grey.dtype == np.float32
    assert grey.mean() == pytest.approx(128 / 255, abs=0.01)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_angiogram(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageError, match="text.png: not a readable image"):
        load_angiogram(tmp_path / "text.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png"):
        load_angiogram(tmp_path / "empty.png")
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(ImageError, match="cut.png"):
        load_angiogram(tmp_path / "cut.png")


def test_decompression_bomb_is_refused(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)  # 81 Mpx of zeros: a few kB on disk
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ImageError, match="decompression bomb"):
        load_angiogram(bomb)


def test_aux_aspect_ratio_must_match():
    check_aligned(np.zeros((100, 100)), np.zeros((300, 300)), "live")  # other resolution is fine
    with pytest.raises(ImageError, match="reference image aspect ratio"):
        check_aligned(np.zeros((100, 100)), np.zeros((100, 150)), "reference")
