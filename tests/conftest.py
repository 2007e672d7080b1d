import os
from pathlib import Path

import pytest

import casiqa  # noqa: F401  (sets the CPU allocator's huge pages before torch loads)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "real" / "coronary40"


def pytest_collection_modifyitems(config, items):
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def real_dir() -> Path:
    if not (REAL_DIR / "1.png").is_file():
        pytest.skip(f"real angiograms not found at {REAL_DIR}")
    return REAL_DIR


@pytest.fixture(scope="session")
def phantom(tmp_path_factory):
    """A small phantom DatasetDict (30 cases of 128 px), built once per test session."""
    from casiqa.phantom.build import BuildConfig, build
    from casiqa.phantom.config import PhantomConfig

    out = tmp_path_factory.mktemp("phantom")
    build(PhantomConfig(size=128), BuildConfig(out=str(out), n=30, seed=5, workers=1), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """An untrained tiny CAS-IQA model saved to disk (built once per test session)."""
    from casiqa.model.loading import build_tiny, save

    out = tmp_path_factory.mktemp("tiny-model")
    model, processor = build_tiny(seed=0)
    save(model, processor, out)
    return out


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    from casiqa.model.loading import load

    return load(tiny_dir)
