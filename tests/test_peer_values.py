"""seg_jax against values recorded from the peer libraries (no torch import here).

The numbers below were printed by ``python benchmarks/peer_values.py`` (torch 2.13.0+cpu,
MONAI 1.6.1, segmentation_models_pytorch 0.6.0) on the fixed inputs of its ``inputs()``, which
this test rebuilds from the same closed-form expressions. Each entry names the call that gave it.
The peers ran in float64 (their surface metrics return float32); seg_jax's losses compute in
float32, hence the tolerances. No peer has a top-k cross-entropy that installs here (MONAI has
none; nnU-Net's ``TopKLoss`` needs the nnU-Net package), so top-k is checked against the float64
reference only (tests/test_topk.py).
"""

import importlib.util
import os

import numpy as np
import pytest

from seg_jax import losses, metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _inputs():
  path = os.path.join(REPO, "benchmarks", "peer_values.py")
  spec = importlib.util.spec_from_file_location("peer_values", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)  # NumPy only at import; torch is imported in main().
  return {
    k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in module.inputs().items()
  }


X = _inputs()

# (seg_jax loss, its call, recorded peer value, source, rtol)
LOSS_CASES = {
  "dice_soft_labels_vs_monai": (
    lambda: losses.get("dice")(
      X["logits"], X["soft_multiclass"], mode="multiclass", soft_labels=True
    ),
    0.4832751624993585,
    "monai.losses.DiceLoss(softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5, "
    "soft_label=True)(logits, soft targets)",
    1e-6,
  ),
  "dice_product_form_vs_monai": (
    lambda: losses.get("dice")(X["logits"], X["soft_multiclass"], mode="multiclass"),
    0.7031148948185851,
    "monai.losses.DiceLoss(... same, soft_label=False)",
    1e-6,
  ),
  "dice_soft_labels_multilabel_vs_smp": (
    lambda: losses.get("dice")(
      X["logits"], X["soft_multilabel"], mode="multilabel", soft_labels=True, smooth=0.0
    ),
    0.30421929785045115,
    "segmentation_models_pytorch.losses.DiceLoss(mode='multilabel', from_logits=True, "
    "smooth=0.0)(logits, soft targets) (soft_dice_score's |p - g| form)",
    1e-6,
  ),
  "mcc_binary_vs_smp": (
    lambda: losses.get("mcc")(X["binary_logits"][..., None], X["binary_labels"], mode="binary"),
    0.6283263341700123,
    "segmentation_models_pytorch.losses.MCCLoss(eps=1e-5)(sigmoid(logits), labels)",
    1e-6,
  ),
  # MONAI smooths differently (1e-5 under the square root, none in the numerator; seg_jax and
  # smp add 1e-5 to each count): a relative difference of ~1e-6 on these 40-pixel counts.
  "mcc_multiclass_vs_monai": (
    lambda: losses.get("mcc")(X["logits"], X["hard"], mode="multiclass"),
    0.3983518330550659,
    "monai.losses.MCCLoss(softmax=True, batch=True)(logits, one_hot(labels))",
    1e-5,
  ),
  "mcc_multiclass_per_image_vs_monai": (
    lambda: losses.get("mcc")(X["logits"], X["hard"], mode="multiclass", per_image=True),
    0.3981168471271932,
    "monai.losses.MCCLoss(softmax=True, batch=False)(logits, one_hot(labels))",
    1e-5,
  ),
}


@pytest.mark.parametrize("case", sorted(LOSS_CASES))
def test_loss_matches_the_recorded_peer_value(case):
  fn, peer, source, rtol = LOSS_CASES[case]
  np.testing.assert_allclose(float(fn()), peer, rtol=rtol, err_msg=source)


def test_soft_label_dice_differs_from_the_product_form_on_these_inputs():
  # The two recorded MONAI values differ, and seg_jax follows each form: the option matters.
  soft = LOSS_CASES["dice_soft_labels_vs_monai"][1]
  product = LOSS_CASES["dice_product_form_vs_monai"][1]
  assert product - soft > 0.1


def test_surface_metrics_match_monai():
  # monai.metrics.compute_surface_dice(one_hot(disc), one_hot(ellipse), [tol]) and
  # compute_hausdorff_distance(..., percentile=95); background excluded (include_background
  # False, the default). MONAI returns float32: 16/36, 33/36 and 29/36 of the 36 surface pixels.
  pred, true = X["disc"], X["ellipse"]
  recorded = {0.5: 0.4444444477558136, 1.0: 0.9166666865348816, 2.0: 1.0}
  for tol, peer in recorded.items():
    assert metrics.surface_dice(pred, true, tolerance=tol) == pytest.approx(peer, rel=1e-7)
  # compute_surface_dice(..., [1.0], spacing=(1.0, 2.0)).
  assert metrics.surface_dice(pred, true, (1.0, 2.0)) == pytest.approx(0.8055555820465088, rel=1e-7)
  assert metrics.hausdorff95(pred, true) == pytest.approx(1.443502426147461, rel=1e-6)
