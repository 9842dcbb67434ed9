"""Tests of seg_jax.metrics against hand calculations and independent NumPy references.

References here are written from the definitions: the confusion matrix by a loop over pixels,
surfaces by checking the face neighbours of every pixel, distances by brute-force pairwise
Euclidean distances, percentiles by explicit linear interpolation.
"""

import json

import jax
import jax.numpy as jnp
import np_ref
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from seg_jax import metrics

# ---------------------------------------------------------------- independent references


def ref_confusion(pred, label, num_classes, valid=None):
  pred, label = np.asarray(pred), np.asarray(label)
  if valid is None:
    valid = np.ones(label.shape, bool)
  valid = np.asarray(valid, bool)
  cm = np.zeros((num_classes, num_classes), np.int64)
  for index in np.ndindex(label.shape):
    ok = valid[index[:1]] if valid.ndim == 1 else valid[index]
    t, p = int(label[index]), int(pred[index])
    if ok and 0 <= t < num_classes and 0 <= p < num_classes:
      cm[t, p] += 1
  return cm


def ref_percentile(values, q):
  """Linear interpolation between closest ranks (the 'linear' method)."""
  v = np.sort(np.asarray(values, np.float64))
  pos = q / 100 * (len(v) - 1)
  lo = int(np.floor(pos))
  hi = min(lo + 1, len(v) - 1)
  return v[lo] + (pos - lo) * (v[hi] - v[lo])


ref_directed = np_ref.directed_surface_distances
ref_nsd = np_ref.surface_dice


def ref_hd(a, b, spacing, q=95, pooling="max"):
  d_ab, d_ba = ref_directed(a, b, spacing)
  if pooling == "pooled":
    return ref_percentile(np.concatenate([d_ab, d_ba]), q)
  return max(ref_percentile(d_ab, q), ref_percentile(d_ba, q))


# ------------------------------------------------------------------------ confusion


def test_confusion_by_hand():
  label = np.array([[0, 0, 1, 1, 2, 255]])
  pred = np.array([[0, 1, 1, 2, 2, 0]])
  want = [[1, 1, 0], [0, 1, 1], [0, 0, 1]]  # the 255 pixel is not counted
  assert metrics.confusion_np(pred, label, 3).tolist() == want
  assert np.asarray(metrics.confusion(pred, label, 3)).tolist() == want
  valid = np.array([[1, 1, 1, 0, 1, 1]], bool)
  assert metrics.confusion_np(pred, label, 3, valid).tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


@pytest.mark.parametrize("spatial", [(7,), (5, 6), (3, 4, 5)], ids=["1d", "2d", "3d"])
def test_confusion_matches_pixel_loop(spatial, rng):
  c = 4
  label = rng.integers(-1, c + 1, size=(3, *spatial))  # -1 and c are ignored labels
  pred = rng.integers(0, c, size=(3, *spatial))
  per_example = np.array([True, False, True])
  per_pixel = rng.random((3, *spatial)) < 0.7
  jitted = jax.jit(metrics.confusion, static_argnums=2)
  for valid in (None, per_example, per_pixel):
    want = ref_confusion(pred, label, c, valid)
    np.testing.assert_array_equal(metrics.confusion_np(pred, label, c, valid), want)
    got = jitted(pred.astype(np.int32), label.astype(np.int32), c, valid)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(got), want)


def test_confusion_psum_under_shard_map_gives_global_counts(rng):
  mesh = Mesh(np.array(jax.devices()), ("data",))
  label = rng.integers(0, 3, size=(8, 4, 4)).astype(np.int32)
  pred = rng.integers(0, 3, size=(8, 4, 4)).astype(np.int32)
  valid = np.array([1, 1, 0, 1, 1, 1, 0, 1], bool)

  def per_device(p, t, v):
    return metrics.confusion(p, t, 3, v, axis_name="data")

  got = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("data"), out_specs=P()))(
    pred, label, valid
  )
  np.testing.assert_array_equal(np.asarray(got), ref_confusion(pred, label, 3, valid))


def test_confusion_errors():
  a = np.zeros((2, 4), np.int32)
  with pytest.raises(ValueError, match=r"same shape.*\(2, 4\).*\(2, 5\)"):
    metrics.confusion(a, np.zeros((2, 5), np.int32), 2)
  with pytest.raises(ValueError, match=r"valid must have shape \(batch,\).*got \(4,\)"):
    metrics.confusion_np(a, a, 2, np.ones(4, bool))
  with pytest.raises(ValueError, match="integer class map.*float32"):
    metrics.confusion(a.astype(np.float32), a, 2)
  with pytest.raises(ValueError, match=r"predictions must lie in \[0, 2\)"):
    metrics.confusion_np(a + 2, a, 2)
  with pytest.raises(TypeError, match="num_classes must be an int"):
    metrics.confusion_np(a, a, 2.0)


# ------------------------------------------------------------------ ratios and means


def test_ratios_by_hand_and_undefined_classes():
  # rows truth, columns prediction; class 3 never occurs; class 2 is never predicted.
  cm = np.array([[5, 1, 0, 0], [2, 3, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
  # class 0: TP 5, FP 3, FN 1; class 1: TP 3, FP 2, FN 2; class 2: TP 0, FP 0, FN 2.
  np.testing.assert_allclose(metrics.dice(cm), [10 / 14, 6 / 10, 0, np.nan])
  np.testing.assert_allclose(metrics.iou(cm), [5 / 9, 3 / 7, 0, np.nan])
  np.testing.assert_allclose(metrics.precision(cm), [5 / 8, 3 / 5, np.nan, np.nan])
  np.testing.assert_allclose(metrics.recall(cm), [5 / 6, 3 / 5, 0, np.nan])
  assert metrics.foreground_mean(metrics.dice(cm)) == pytest.approx((6 / 10 + 0) / 2)
  assert metrics.foreground_mean(metrics.precision(cm)) == pytest.approx(3 / 5)
  assert np.isnan(metrics.foreground_mean(np.array([0.3, np.nan])))
  with pytest.raises(ValueError, match=r"square \(C, C\)"):
    metrics.dice(np.zeros((2, 3)))


def test_ratios_match_sets_on_random_maps(rng):
  pred = rng.integers(0, 3, size=(2, 9, 9))
  label = rng.integers(0, 3, size=(2, 9, 9))
  cm = metrics.confusion_np(pred, label, 3)
  for c in range(3):
    p, t = pred == c, label == c
    inter, ps, ts = (p & t).sum(), p.sum(), t.sum()
    assert metrics.dice(cm)[c] == pytest.approx(2 * inter / (ps + ts))
    assert metrics.iou(cm)[c] == pytest.approx(inter / (p | t).sum())
    assert metrics.precision(cm)[c] == pytest.approx(inter / ps)
    assert metrics.recall(cm)[c] == pytest.approx(inter / ts)


def test_predict_labels():
  one = jnp.array([[[-0.5], [0.0], [0.1]]])
  assert metrics.predict_labels(one).tolist() == [[0, 0, 1]]
  many = jnp.array([[[0.1, 2.0, -1.0], [3.0, 2.0, 1.0]]])
  out = metrics.predict_labels(many)
  assert out.tolist() == [[1, 0]] and out.dtype == jnp.int32


# ------------------------------------------------------------------------- HD95


def test_hausdorff_by_hand():
  a = np.zeros((9, 9), bool)
  b = np.zeros((9, 9), bool)
  a[1, 1] = True
  b[4, 5] = True
  assert metrics.hausdorff95(a, b) == pytest.approx(5.0)  # 3-4-5 triangle
  assert metrics.hausdorff95(a, b, spacing=(2.0, 0.5)) == pytest.approx(np.hypot(6, 2))
  assert metrics.hausdorff95(a, a) == 0.0
  square = np.zeros((9, 9), bool)
  square[2:7, 2:7] = True
  shifted = np.roll(square, 2, axis=1)
  assert metrics.hausdorff95(square, shifted, percentile=100) == pytest.approx(2.0)
  # A 1-D segment [2, 6] against [2, 4]: surfaces {2, 6} and {2, 4}; directed distances
  # {0, 2} and {0, 2}; the 95th percentile of {0, 2} is 0 + 0.95 * 2 = 1.9, that of the pooled
  # {0, 0, 2, 2} is at rank 0.95 * 3 = 2.85, between 2 and 2.
  seg, short = np.zeros(10, bool), np.zeros(10, bool)
  seg[2:7], short[2:5] = True, True
  assert metrics.hausdorff95(seg, short) == pytest.approx(1.9)
  assert metrics.hausdorff95(seg, short, pooling="pooled") == pytest.approx(2.0)


@pytest.mark.parametrize(
  "shape, spacing", [((12,), (0.7,)), ((11, 9), (1.0, 2.5)), ((6, 7, 5), (1.5, 1.0, 0.5))]
)
@pytest.mark.parametrize("pooling", ["max", "pooled"])
def test_hausdorff_matches_brute_force(shape, spacing, pooling, rng):
  for density in (0.3, 0.75, 0.9):  # dense masks have interior pixels
    a = rng.random(shape) < density
    b = rng.random(shape) < 0.3
    a.flat[0] = b.flat[-1] = True  # both non-empty
    want = ref_hd(a, b, spacing, pooling=pooling)
    assert metrics.hausdorff95(a, b, spacing, pooling=pooling) == pytest.approx(want, rel=1e-12)
    want100 = ref_hd(a, b, spacing, q=100, pooling=pooling)
    got100 = metrics.hausdorff95(a, b, spacing, percentile=100, pooling=pooling)
    assert got100 == pytest.approx(want100, rel=1e-12)


def test_hausdorff_conventions_differ_where_they_should():
  # Directed distances A->B = {0 x 10, 10}, B->A = {0 x 10, 2}: 'max' gives P95(A->B) = 5
  # (rank 9.5 between 0 and 10); 'pooled' gives 1.9 (rank 19.95 of 22, between 0 and 2).
  a = np.zeros(40, bool)
  b = np.zeros(40, bool)
  a[[0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 30]] = True  # isolated pixels: every one is surface
  b[[0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]] = True
  assert metrics.hausdorff95(a, b) == pytest.approx(5.0)
  assert metrics.hausdorff95(a, b, pooling="pooled") == pytest.approx(1.9)


def test_hausdorff_empty_masks_and_errors():
  empty = np.zeros((4, 4), bool)
  full = np.ones((4, 4), bool)
  assert np.isnan(metrics.hausdorff95(empty, empty))
  assert metrics.hausdorff95(empty, full) == np.inf
  assert metrics.hausdorff95(full, empty) == np.inf
  with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
    metrics.hausdorff95(full, np.ones((4, 5)))
  with pytest.raises(ValueError, match="spacing"):
    metrics.hausdorff95(full, full, spacing=(1.0, -1.0))
  with pytest.raises(ValueError, match="spacing"):
    metrics.hausdorff95(full, full, spacing=(1.0, 1.0, 1.0))
  with pytest.raises(ValueError, match="pooling"):
    metrics.hausdorff95(full, full, pooling="mean")
  with pytest.raises(ValueError, match="1-3 spatial dims"):
    metrics.hausdorff95(np.ones((2, 2, 2, 2)), np.ones((2, 2, 2, 2)))


# -------------------------------------------------------------------------- NSD


def test_surface_dice_by_hand():
  # 1-D: [2, 6] against [2, 4]. Surfaces {2, 6} and {2, 4}; directed distances {0, 2} both ways:
  # within 1: 2 of the 4 surface pixels; within 2: all of them.
  seg, short = np.zeros(10, bool), np.zeros(10, bool)
  seg[2:7], short[2:5] = True, True
  assert metrics.surface_dice(seg, short) == 0.5
  assert metrics.surface_dice(seg, short, tolerance=2.0) == 1.0
  assert metrics.surface_dice(seg, short, tolerance=1.99) == 0.5
  # 2-D: a 3x3 square against the same square one column to the right. Each has 8 surface pixels
  # (the centre is interior); 4 of each lie on the other's surface (distance 0), the other 4 at
  # distance 1: 8/16 within 0.5, 16/16 within 1.
  a = np.zeros((8, 8), bool)
  b = np.zeros((8, 8), bool)
  a[2:5, 2:5], b[2:5, 3:6] = True, True
  assert metrics.surface_dice(a, b, tolerance=0.5) == 0.5
  assert metrics.surface_dice(a, b) == 1.0
  assert metrics.surface_dice(a, b, tolerance=0) == 0.5
  # Columns 2 units wide: the horizontal offsets become 2, except the pixel beside the other
  # square's centre, 1 row from the other surface: 5 of 8 within 1 on each side.
  assert metrics.surface_dice(a, b, spacing=(1.0, 2.0)) == pytest.approx(10 / 16)
  assert metrics.surface_dice(a, b, spacing=(1.0, 2.0), tolerance=2.0) == 1.0
  assert metrics.surface_dice(a, a, tolerance=0.0) == 1.0
  # Far apart: no surface pixel within the tolerance.
  c = np.zeros((8, 8), bool)
  c[7, 7] = True
  assert metrics.surface_dice(a, c, tolerance=2.0) == 0.0


def test_surface_dice_empty_masks_and_errors():
  empty = np.zeros((4, 4), bool)
  full = np.ones((4, 4), bool)
  assert np.isnan(metrics.surface_dice(empty, empty))  # MONAI: NaN, left out of means.
  assert metrics.surface_dice(empty, full) == 0.0  # MONAI: 0 when only one is empty.
  assert metrics.surface_dice(full, empty, tolerance=100.0) == 0.0
  with pytest.raises(ValueError, match="tolerance must be finite and >= 0, got -1"):
    metrics.surface_dice(full, full, tolerance=-1.0)
  with pytest.raises(TypeError, match="tolerance must be a number"):
    metrics.surface_dice(full, full, tolerance=None)
  with pytest.raises(ValueError, match=r"\(4, 4\) and true_mask \(4, 5\)"):
    metrics.surface_dice(full, np.ones((4, 5)))
  with pytest.raises(ValueError, match="1-3 spatial dims"):
    metrics.surface_dice(np.ones((2, 2, 2, 2)), np.ones((2, 2, 2, 2)))


@pytest.mark.parametrize(
  "shape, spacing", [((12,), (0.7,)), ((11, 9), (1.0, 2.5)), ((6, 7, 5), (1.5, 1.0, 0.5))]
)
def test_surface_dice_matches_brute_force(shape, spacing, rng):
  # Tolerances chosen off every distance these spacings can produce (no ties at d == tau).
  for density in (0.3, 0.75, 0.9):
    a = rng.random(shape) < density
    b = rng.random(shape) < 0.3
    a.flat[0] = b.flat[-1] = True
    for tol in (0.0, 1.3, 2.6):
      want = ref_nsd(a, b, spacing, tol)
      assert metrics.surface_dice(a, b, spacing, tolerance=tol) == pytest.approx(want, rel=1e-12)
      hd, nsd = metrics.surface_scores(a, b, spacing, tolerance=tol)
      assert hd == pytest.approx(ref_hd(a, b, spacing), rel=1e-12)
      assert nsd == pytest.approx(want, rel=1e-12)


# ---------------------------------------------------------------------- SegMetrics


def test_segmetrics_accumulates_exactly_whatever_the_batching(rng):
  pred = rng.integers(0, 3, size=(10, 6, 6))
  label = rng.integers(0, 3, size=(10, 6, 6))
  label[3, 0, :] = 255  # ignored pixels
  names = ["bg", "a", "b"]
  whole = metrics.SegMetrics(3, names)
  whole.update(pred, label)
  batched = metrics.SegMetrics(3, names)
  for start in range(0, 10, 4):  # batches of 4, the last one padded
    p = np.zeros((4, 6, 6), int)
    t = np.zeros((4, 6, 6), int)
    n = min(4, 10 - start)
    p[:n], t[:n] = pred[start : start + n], label[start : start + n]
    valid = np.arange(4) < n
    batched.update(jnp.asarray(p), jnp.asarray(t), jnp.asarray(valid))
  a, b = whole.compute(), batched.compute()
  assert a == b
  cm = ref_confusion(pred, label, 3)
  assert a["num_pixels"] == 10 * 36 - 6
  assert a["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
  for c, name in enumerate(names):
    p, t = (pred == c) & (label != 255), label == c
    assert a[f"dice/{name}"] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()))
    assert a[f"recall/{name}"] == pytest.approx((p & t).sum() / t.sum())
  dice_fg = [2 * cm[c, c] / (cm[c].sum() + cm[:, c].sum()) for c in (1, 2)]
  assert a["dice_mean"] == pytest.approx(np.mean(dice_fg))
  # The surface metrics of every foreground class, per image (the padding of the last batch is
  # skipped), averaged over images, then over classes.
  hd = {c: [] for c in (1, 2)}
  nsd = {c: [] for c in (1, 2)}
  for i in range(10):
    for c in (1, 2):
      p, t = (pred[i] == c) & (label[i] != 255), label[i] == c
      if p.any() and t.any():
        hd[c].append(ref_hd(p, t, (1.0, 1.0)))
      if p.any() or t.any():
        nsd[c].append(ref_nsd(p, t, (1.0, 1.0), 1.0))
  for c in (1, 2):
    assert a[f"hd95/{names[c]}"] == pytest.approx(np.mean(hd[c]), rel=1e-12)
    assert a[f"nsd/{names[c]}"] == pytest.approx(np.mean(nsd[c]), rel=1e-12)
  assert a["hd95"] == pytest.approx((np.mean(hd[1]) + np.mean(hd[2])) / 2, rel=1e-12)
  assert a["nsd_mean"] == pytest.approx((np.mean(nsd[1]) + np.mean(nsd[2])) / 2, rel=1e-12)
  assert a["hd95_images"] == len(hd[1]) + len(hd[2]) and a["nsd_images"] == 20


def test_segmetrics_global_counts_differ_from_averaging_batches():
  # Batch 1: a big object found perfectly; batch 2: a one-pixel object missed.
  m = metrics.SegMetrics(2)
  big = np.zeros((1, 8, 8), int)
  big[0, :4] = 1
  small = np.zeros((1, 8, 8), int)
  small[0, 0, 0] = 1
  m.update(big, big)
  m.update(np.zeros_like(small), small)
  # Global: TP 32, FN 1 -> 64 / 65; the mean of per-batch Dice would be (1 + 0) / 2.
  assert m.compute()["dice_mean"] == pytest.approx(64 / 65)


def test_segmetrics_undefined_values_are_left_out_and_json_is_strict():
  m = metrics.SegMetrics(3, ["bg", "present", "absent"], spacing=None)
  label = np.array([[0, 1, 1, 0]])
  pred = np.array([[0, 1, 0, 0]])
  m.update(pred, label)
  out = m.compute()
  assert "dice/absent" not in out and "iou/absent" not in out
  assert "precision/absent" not in out and "recall/absent" not in out
  assert out["dice_mean"] == pytest.approx(2 / 3)  # class 'present' only
  assert out["precision_mean"] == pytest.approx(1.0)
  json.dumps(out, allow_nan=False)
  empty = metrics.SegMetrics(2)
  empty.update(np.zeros((1, 4, 4), int), np.zeros((1, 4, 4), int))
  got = empty.compute()
  assert "dice_mean" not in got and "hd95" not in got
  assert got["hd95_both_empty"] == 1 and got["hd95_images"] == 0
  json.dumps(got, allow_nan=False)


def test_segmetrics_hd95_per_image_with_padding_and_empty_masks():
  m = metrics.SegMetrics(2, ["background", "fg"], spacing=(1.0, 2.0))
  preds = np.zeros((4, 9, 9), int)
  labels = np.zeros((4, 9, 9), int)
  preds[0, 2:5, 2:5] = 1  # image 0: both masks non-empty
  labels[0, 3:6, 2:6] = 1
  preds[1, 1, 1] = 1  # image 1: prediction only
  labels[2, 4, 4] = 1  # image 2: padding (valid False) -> ignored
  preds[3, 0, 0] = 1  # image 3: both non-empty, 4 rows apart
  labels[3, 4, 0] = 1
  m.update(preds, labels, np.array([True, True, False, True]))
  out = m.compute()
  h0 = ref_hd(preds[0], labels[0], (1.0, 2.0))
  assert out["hd95"] == pytest.approx((h0 + 4.0) / 2)
  assert out["hd95/fg"] == out["hd95"]
  assert (out["hd95_images"], out["hd95_one_empty"], out["hd95_both_empty"]) == (2, 1, 0)
  # NSD at 1 (spacing units): image 0 from the reference, image 1 (prediction only) 0, image 3
  # (two dots 4 apart) 0; three images.
  n0 = ref_nsd(preds[0], labels[0], (1.0, 2.0), 1.0)
  assert 0 < n0 < 1
  assert out["nsd_mean"] == out["nsd/fg"] == pytest.approx(n0 / 3)
  assert out["nsd_images"] == 3
  m = metrics.SegMetrics(2, ["background", "fg"], spacing=(1.0, 2.0), nsd_tolerance=4.0)
  m.update(preds, labels, np.array([True, True, False, True]))
  n0 = ref_nsd(preds[0], labels[0], (1.0, 2.0), 4.0)
  assert m.compute()["nsd_mean"] == pytest.approx((n0 + 0 + 1) / 3)
  m.reset()
  assert m.compute()["num_pixels"] == 0


def test_segmetrics_surface_metrics_per_class_by_hand():
  # Three classes, two images of 8x8. Image 0: class 1 a 3x3 square predicted one column to the
  # right (NSD at 1: 1.0, HD95 1.0); class 2 a dot predicted 3 rows away (NSD 0, HD95 3).
  # Image 1: class 1 absent from both (left out); class 2 predicted but absent (NSD 0, no HD95).
  labels = np.zeros((2, 8, 8), int)
  preds = np.zeros((2, 8, 8), int)
  labels[0, 2:5, 2:5], preds[0, 2:5, 3:6] = 1, 1
  labels[0, 7, 0], preds[0, 4, 0] = 2, 2
  preds[1, 0, 0] = 2
  m = metrics.SegMetrics(3, ["bg", "square", "dot"], nsd_tolerance=[1.0, 3.0])
  m.update(preds, labels)
  out = m.compute()
  assert out["hd95/square"] == 1.0 and out["hd95/dot"] == 3.0 and out["hd95"] == 2.0
  assert (out["hd95_images"], out["hd95_one_empty"], out["hd95_both_empty"]) == (2, 1, 1)
  # Per-class tolerance: the dot is within 3 of its truth, NSD 1 on image 0, 0 on image 1.
  assert out["nsd/square"] == 1.0 and out["nsd/dot"] == 0.5 and out["nsd_mean"] == 0.75
  assert out["nsd_images"] == 3
  strict = metrics.SegMetrics(3, ["bg", "square", "dot"], nsd_tolerance=0.5, hd95=False)
  strict.update(preds, labels)
  got = strict.compute()
  assert got["nsd/square"] == 0.5 and got["nsd/dot"] == 0.0 and "hd95" not in got
  json.dumps(got, allow_nan=False)
  with pytest.raises(ValueError, match="1-3 spatial dims"):
    strict.update(np.zeros((1, 2, 2, 2, 2), int), np.zeros((1, 2, 2, 2, 2), int))


def test_segmetrics_add_confusion_from_device_counts(rng):
  pred = rng.integers(0, 2, size=(2, 5, 5)).astype(np.int32)
  label = rng.integers(0, 2, size=(2, 5, 5)).astype(np.int32)
  from_maps = metrics.SegMetrics(2, hd95=False, nsd=False)
  from_maps.update(pred, label)
  from_counts = metrics.SegMetrics(2, hd95=False, nsd=False)
  from_counts.add_confusion(metrics.confusion(pred, label, 2))
  assert from_maps.compute() == from_counts.compute()
  with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
    from_counts.add_confusion(np.zeros((3, 3), int))


@pytest.mark.parametrize(
  "args, kwargs, error, match",
  [
    ((1,), {}, ValueError, "num_classes must be >= 2"),
    ((2.0,), {}, TypeError, "num_classes must be an int"),
    ((3, ["a", "b"]), {}, ValueError, "3 distinct names"),
    ((2, ["a", "a"]), {}, ValueError, "2 distinct names"),
    ((3,), {"nsd_tolerance": [1.0]}, ValueError, r"one number per foreground class \(2\)"),
    ((3,), {"nsd_tolerance": [1.0, -1.0]}, ValueError, r"nsd_tolerance\[1\] must be finite"),
    ((2,), {"nsd_tolerance": "1"}, TypeError, "nsd_tolerance must be a number"),
    ((2,), {"spacing": (1.0, 0.0)}, ValueError, "spacing must be a positive number"),
    ((2,), {"hd95_pooling": "min"}, ValueError, "hd95_pooling"),
  ],
)
def test_segmetrics_errors(args, kwargs, error, match):
  with pytest.raises(error, match=match):
    metrics.SegMetrics(*args, **kwargs)


def test_surface_distances_by_hand():
  ring = np.zeros((5, 5), bool)
  ring[1:4, 1:4] = True  # centre (2, 2) is interior, the other 8 pixels are surface
  dot = np.zeros((5, 5), bool)
  dot[2, 2] = True
  d = np.sort(metrics.surface_distances(ring, dot))
  np.testing.assert_allclose(d, [1, 1, 1, 1] + [np.sqrt(2)] * 4)
  assert metrics.surface_distances(dot, ring).tolist() == [1.0]
  # A plus sign: its centre has no background face neighbour (only diagonal ones), so it is
  # interior with face connectivity (MedPy, MONAI) and the surface is the 4 arms.
  plus = np.zeros((5, 5), bool)
  plus[1:4, 2] = plus[2, 1:4] = True
  assert metrics.surface_distances(plus, dot).tolist() == [1.0, 1.0, 1.0, 1.0]
