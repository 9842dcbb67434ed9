"""Peer values of MONAI and segmentation_models_pytorch losses and metrics on fixed inputs.

Run once by hand (needs torch, monai and segmentation-models-pytorch, the optional peer extras);
the numbers it prints are recorded, with the library versions and calls, in
``tests/test_peer_values.py``, which compares seg_jax to them without importing torch::

  python benchmarks/peer_values.py

The inputs are built from closed-form NumPy expressions (:func:`inputs`), so the test rebuilds
exactly the same arrays. Layout: seg_jax is channels-last ``(batch, *spatial, C)``; the peers
are channels-first, so the script transposes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types

import numpy as np


def inputs() -> dict[str, np.ndarray]:
  """Fixed float64 inputs: logits ``(2, 4, 5, 3)``, a hard class map ``(2, 4, 5)``, soft
  multilabel targets and soft one-hot-like class targets ``(2, 4, 5, 3)``, binary logits and
  hard binary labels ``(2, 4, 5)``, and two binary masks ``(12, 10)`` for the surface metrics."""
  n = np.arange(2 * 4 * 5 * 3, dtype=np.float64)
  k = np.arange(2 * 4 * 5)
  hard = ((k * 7 + k // 5) % 3).reshape(2, 4, 5)
  # Logits that mostly agree with ``hard`` (2 for the true class) plus a deterministic wiggle.
  noise = (1.2 * np.sin(0.7 * n) + 0.5 * np.cos(1.3 * n)).reshape(2, 4, 5, 3)
  logits = 2.0 * (hard[..., None] == np.arange(3)) + noise
  soft_ml = (0.5 + 0.45 * np.sin(0.9 * n + 0.3)).reshape(2, 4, 5, 3)  # in (0.05, 0.95)
  z = np.cos(0.4 * n).reshape(2, 4, 5, 3) * 2.0
  soft_mc = np.exp(z) / np.exp(z).sum(-1, keepdims=True)  # rows sum to 1
  binary_labels = ((k * 3 + k // 4) % 5 < 2).astype(np.int64).reshape(2, 4, 5)
  binary_logits = 2.0 * binary_labels - 1.0 + 1.5 * np.sin(0.8 * k).reshape(2, 4, 5)
  yy, xx = np.mgrid[:12, :10]
  disc = (yy - 5.5) ** 2 + (xx - 4.5) ** 2 <= 12.0
  ellipse = ((yy - 6.0) / 4.2) ** 2 + ((xx - 5.0) / 3.1) ** 2 <= 1.0
  return {
    "logits": logits,
    "hard": hard,
    "soft_multilabel": soft_ml,
    "soft_multiclass": soft_mc,
    "binary_logits": binary_logits,
    "binary_labels": binary_labels,
    "disc": disc,
    "ellipse": ellipse,
  }


def _smp_losses():
  """``segmentation_models_pytorch.losses`` without the package ``__init__`` (timm, hub)."""
  spec = importlib.util.find_spec("segmentation_models_pytorch")
  stub = types.ModuleType("segmentation_models_pytorch")
  stub.__path__ = list(spec.submodule_search_locations)
  sys.modules["segmentation_models_pytorch"] = stub
  import segmentation_models_pytorch.losses as smp_losses

  return smp_losses


def main() -> None:
  import monai
  import torch
  from monai.losses import DiceLoss, MCCLoss
  from monai.metrics import compute_hausdorff_distance, compute_surface_dice

  smp = _smp_losses()
  from importlib.metadata import version

  x = inputs()
  t = lambda a: torch.tensor(np.moveaxis(a, -1, 1))  # noqa: E731  channels-last -> first
  logits = t(x["logits"])
  hard = torch.tensor(x["hard"])
  onehot = torch.nn.functional.one_hot(hard, 3).permute(0, 3, 1, 2).double()
  out = {
    "versions": {
      "torch": torch.__version__,
      "monai": monai.__version__,
      "segmentation_models_pytorch": version("segmentation_models_pytorch"),
    }
  }
  # Soft-label Dice (Wang & Blaschko): MONAI, softmax over classes, batch-pooled, smooth 1e-5.
  for soft in (True, False):
    loss = DiceLoss(softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5, soft_label=soft)
    out[f"monai_dice_softmax_soft_label_{soft}"] = float(loss(logits, t(x["soft_multiclass"])))
  # smp DiceLoss, multilabel (sigmoid per channel), soft targets, smooth 0, batch-pooled.
  smp_dice = smp.DiceLoss(mode="multilabel", from_logits=True, smooth=0.0)
  out["smp_dice_multilabel_soft"] = float(smp_dice(logits, t(x["soft_multilabel"])))
  # MCC: smp (binary, probabilities, batch-pooled, eps 1e-5 on every count).
  probs = torch.sigmoid(torch.tensor(x["binary_logits"]))
  out["smp_mcc_binary"] = float(smp.MCCLoss(eps=1e-5)(probs, torch.tensor(x["binary_labels"])))
  # MCC: MONAI, softmax, one-hot class map, batch-pooled (batch=True), default smoothing.
  out["monai_mcc_softmax_batch"] = float(MCCLoss(softmax=True, batch=True)(logits, onehot))
  out["monai_mcc_softmax_per_image"] = float(MCCLoss(softmax=True, batch=False)(logits, onehot))
  # Surface metrics: disc (prediction) against ellipse (truth), 2 classes, foreground only.
  pred = torch.tensor(np.stack([~x["disc"], x["disc"]])[None].astype(np.float64))
  true = torch.tensor(np.stack([~x["ellipse"], x["ellipse"]])[None].astype(np.float64))
  for tol in (0.5, 1.0, 2.0):
    out[f"monai_nsd_tol_{tol}"] = float(compute_surface_dice(pred, true, [tol]))
  out["monai_nsd_tol_1.0_spacing_1_2"] = float(
    compute_surface_dice(pred, true, [1.0], spacing=(1.0, 2.0))
  )
  out["monai_hd95"] = float(compute_hausdorff_distance(pred, true, percentile=95))
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
  main()
