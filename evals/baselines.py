"""Baselines fitted on the train split, scored on the evaluated split.

- brisque: BRISQUE features of the synthetic image, mapped to each metric by RBF kernel ridge
  regression fitted on the train split (the classical NR-IQA recipe: features + a learned map).
- cnn: a small CNN regressor (no language model) trained on the same phantom rows, with the
  target and the auxiliary images as input channels (zeros where an image is absent).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from casiqa.data.rows import grey_image
from casiqa.metrics import METRICS
from evals.brisque import brisque_features


def mos_matrix(rows) -> np.ndarray:
    return np.array([[float(r["scores"][m]["mos"]) for m in METRICS] for r in rows])


class KernelRidge:
    """RBF kernel ridge regression on standardised features (median-distance bandwidth)."""

    def __init__(self, alpha: float = 1e-2):
        self.alpha = alpha

    def fit(self, x: np.ndarray, y: np.ndarray) -> KernelRidge:
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-9
        self.x = (x - self.mu) / self.sd
        d2 = _sqdist(self.x, self.x)
        self.gamma = 1.0 / max(np.median(d2[d2 > 0]), 1e-9)
        k = np.exp(-self.gamma * d2)
        self.y_mean = y.mean(0)
        self.coef = np.linalg.solve(k + self.alpha * len(x) * np.eye(len(x)), y - self.y_mean)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        k = np.exp(-self.gamma * _sqdist((x - self.mu) / self.sd, self.x))
        return k @ self.coef + self.y_mean


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0.0)


def _rows_features(rows, progress) -> np.ndarray:
    return np.stack([brisque_features(grey_image(r["synthetic"])) for r in progress(rows, "brisque features")])


def brisque_baseline(train_rows, eval_rows, progress=lambda it, desc: it) -> np.ndarray:
    """Predicted scores [N, M] on eval_rows."""
    model = KernelRidge().fit(_rows_features(train_rows, progress), mos_matrix(train_rows))
    return model.predict(_rows_features(eval_rows, progress))


def _stack(row, size: int, use_aux: bool) -> np.ndarray:
    chans = []
    for key in ("synthetic", "live", "reference"):
        g = grey_image(row.get(key)) if (key == "synthetic" or use_aux) else None
        if g is None:
            chans.append(np.zeros((size, size), np.float32))
        else:
            chans.append(np.asarray(Image.fromarray((g * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR),
                                    np.float32) / 255.0)
    return np.stack(chans)


def cnn_baseline(train_rows, eval_rows, size: int = 128, epochs: int = 6, use_aux: bool = True, seed: int = 0,
                 progress=lambda it, desc: it) -> np.ndarray:
    """Train a 5-block CNN (MSE on MOS) and predict [N, M] on eval_rows."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    x = torch.tensor(np.stack([_stack(r, size, use_aux) for r in progress(train_rows, "cnn inputs")]))
    y = torch.tensor(mos_matrix(train_rows), dtype=torch.float32)

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    net = nn.Sequential(block(3, 16), block(16, 32), block(32, 48), block(48, 64), block(64, 96),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, len(METRICS)))
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * ((len(x) + 31) // 32))
    for _ in progress(range(epochs), "cnn epochs"):
        net.train()
        for idx in torch.randperm(len(x)).split(32):
            loss = ((net(x[idx]) - y[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        xe = torch.tensor(np.stack([_stack(r, size, use_aux) for r in eval_rows]))
        return torch.cat([net(chunk) for chunk in xe.split(64)]).numpy()
