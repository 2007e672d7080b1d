"""CUDA: the shipped model in bf16 batches, schema-valid full answers, and SFT steps in bf16.
Every test here is marked gpu: conftest skips them on a machine without CUDA."""

import numpy as np
import pytest
import torch

from casiqa.metrics import METRICS
from casiqa.paths import ROOT

pytestmark = pytest.mark.gpu
MODEL = ROOT / "models" / "cas-iqa-tiny"


@pytest.fixture(scope="module")
def cases():
    from benchmarks.bench_assess import cases as phantom_cases

    return phantom_cases(8, 256)


def test_bf16_batches_on_cuda_score_as_fp32_on_cpu(cases):
    from casiqa.assessor import Assessor
    from casiqa.model.loading import load

    gpu = Assessor.load(str(MODEL), batch_size=4)
    assert gpu.device == "cuda" and gpu.model.dtype == torch.bfloat16
    model, processor = load(MODEL, dtype=torch.float32)
    cpu = Assessor(model, processor, model_id="cpu", batch_size=8, device="cpu")
    a = np.array([[h.score[m] for m in METRICS] for h in gpu.heads(cases)])
    b = np.array([[h.score[m] for m in METRICS] for h in cpu.heads(cases)])
    # bf16 keeps ~3 significant digits: scores on the 1-5 scale move by hundredths, not levels
    assert np.abs(a - b).max() < 0.25, np.abs(a - b).max()
    # batching does not change a case's scores beyond bf16 noise
    one = np.array([[gpu.heads([c])[0].score[m] for m in METRICS] for c in cases[:4]])
    assert np.abs(one - a[:4]).max() < 0.1


def test_full_answers_on_cuda_are_schema_valid(cases):
    from casiqa.assessor import Assessor
    from casiqa.metrics import level_of
    from evals.run import validate

    gpu = Assessor.load(str(MODEL), batch_size=4)
    for report in gpu.assess(cases[:4], generate=True):
        parsed, error = validate(report.model_dump_json())
        assert error is None, error
        for m in METRICS:
            assert parsed["metrics"][m]["level"] == level_of(parsed["metrics"][m]["score"])


def test_sft_steps_in_bf16_on_cuda(phantom, monkeypatch):
    from benchmarks.bench_train import measure

    monkeypatch.chdir(ROOT)
    result = measure(["--config", "finetune/recipes/tiny-cpu.yaml", "--data", str(phantom), "--bf16", "true",
                      "--image_size", "112", "--max_steps", "3", "--per_device_train_batch_size", "4",
                      "--use_peft", "true", "--lora_r", "4", "--dataloader_num_workers", "0"], skip=1)
    assert result["device"] != "cpu" and result["bf16"] and result["lora"]
    assert np.isfinite(result["final_loss"]) and result["peak_allocated_gib"] > 0


def test_pixel_path_with_derived_planes_on_cuda_in_bf16():
    """The pixel path with top-hat and device-comparison planes, built on the GPU from planes
    made there (presence, differences), gives in bf16 what it gives in fp32 on the CPU."""
    from casiqa.model.pixel import PixelPath

    torch.manual_seed(0)
    path = PixelPath(dim=16, width=16, tophat=5, compare=(3, 9), dense=3).eval()
    images = [(torch.rand(112, 112), {"live": torch.rand(112, 112), "reference": torch.rand(112, 112)}),
              (torch.rand(112, 112), {"live": torch.rand(112, 112)})]
    x_cpu = torch.stack([path.channels(t, aux) for t, aux in images])
    with torch.no_grad():
        want, _ = path(x_cpu, dense=True)
        gpu = path.to("cuda", torch.bfloat16)
        x_gpu = torch.stack([gpu.channels(t.cuda().bfloat16(), {r: a.cuda().bfloat16() for r, a in aux.items()})
                             for t, aux in images])
        got, fine = gpu(x_gpu, dense=True)
    assert fine.shape == (2, 3, 28, 28)
    assert (got.float().cpu() - want).abs().max() < 0.15 * want.abs().max()
