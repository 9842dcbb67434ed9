"""Tests of seg_jax.choosing.stats, .evaluation and .verdict against hand-computed values and
independent NumPy/SciPy references."""

import numpy as np
import pytest
from scipy import ndimage
from scipy import stats as sp_stats

from seg_jax import metrics
from seg_jax.choosing import evaluation, stats, verdict


def test_estimate_is_the_mean_over_seeds_of_the_mean_over_defined_images():
  x = np.array([[1.0, 0.0, np.nan], [0.5, 0.5, 0.5]])
  assert stats.estimate(x) == pytest.approx((0.5 + 0.5) / 2)
  assert stats.estimate([0.2, 0.4]) == pytest.approx(0.3)
  assert np.isnan(stats.estimate([[np.nan, np.nan]]))
  s = stats.summarize(x, n_boot=200)
  assert s["per_seed"] == [0.5, 0.5] and s["std"] == 0.0 and s["mean"] == pytest.approx(0.5)
  with pytest.raises(ValueError, match=r"\(seeds, images\)"):
    stats.estimate(np.zeros((2, 2, 2)))


def test_bootstrap_interval_matches_the_normal_interval_on_a_large_sample():
  rng = np.random.default_rng(1)
  x = rng.normal(0.7, 0.1, 2000)
  lo, hi = stats.bootstrap_ci(x, n_boot=2000, seed=0)
  half = 1.959964 * x.std(ddof=1) / np.sqrt(x.size)
  assert lo == pytest.approx(x.mean() - half, abs=0.15 * half)
  assert hi == pytest.approx(x.mean() + half, abs=0.15 * half)
  assert stats.bootstrap_ci(x, seed=3) == stats.bootstrap_ci(x, seed=3)  # Seeded.


def test_bootstrap_over_seeds_widens_the_interval_when_seeds_disagree():
  rng = np.random.default_rng(2)
  images = rng.normal(0.8, 0.05, 100)
  agree = np.stack([images, images + 0.001, images - 0.001])
  disagree = np.stack([images, images - 0.4, images])  # One collapsed seed.
  lo_a, hi_a = stats.bootstrap_ci(agree)
  lo_d, hi_d = stats.bootstrap_ci(disagree)
  assert hi_d - lo_d > 5 * (hi_a - lo_a)
  # Resampling three seeds: all three the collapsed one happens with probability 1/27.
  assert lo_d < images.mean() - 0.3


def test_wilcoxon_exact_p_values_by_hand():
  # All five differences positive: W- = 0, exact two-sided p = 2 / 2^5.
  assert stats.wilcoxon_p([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
  # Ranks 1..6, rank 2 negative: W- = 2; subsets of ranks with sum <= 2: {}, {1}, {2}.
  assert stats.wilcoxon_p([1, -2, 3, 4, 5, 6]) == pytest.approx(2 * 3 / 64)
  assert stats.wilcoxon_p([0, 0, 0]) == 1.0
  assert stats.wilcoxon_p([np.nan, 1.0, 2.0, 3.0]) == pytest.approx(2 / 8)


def test_holm_by_hand():
  # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 -> max(0.06, 0.04).
  assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert stats.holm({"a": 0.5, "b": 0.6}) == pytest.approx({"a": 1.0, "b": 1.0})
  with pytest.raises(ValueError, match="p-values"):
    stats.holm([0.1, 1.5])


def test_known_difference_is_detected_and_identical_runs_are_not():
  rng = np.random.default_rng(3)
  base = rng.uniform(0.5, 0.9, (3, 80))
  better = base + 0.05 + rng.normal(0, 0.02, base.shape)
  c = stats.paired_difference(better, base)
  assert c["diff"] == pytest.approx(0.05, abs=0.01)
  assert c["ci95"][0] > 0 and c["p_value"] < 1e-6
  ref = sp_stats.wilcoxon((better - base).mean(axis=0)).pvalue
  assert c["p_value"] == pytest.approx(ref)
  same = stats.paired_difference(base, base.copy())
  assert same["diff"] == 0.0 and same["ci95"][0] <= 0 <= same["ci95"][1]
  assert same["p_value"] >= 0.05
  with pytest.raises(ValueError, match="paired by seed and image"):
    stats.paired_difference(base, base[:, :10])


def test_significance_needs_both_the_test_and_the_interval():
  assert stats.significant({"ci95": [0.01, 0.1], "p_value": 0.01, "p_holm": 0.02})
  assert not stats.significant({"ci95": [-0.01, 0.1], "p_value": 0.01, "p_holm": 0.02})
  assert not stats.significant({"ci95": [0.01, 0.1], "p_value": 0.01, "p_holm": 0.2})


def test_ties_with_the_best_and_holm_over_the_comparisons():
  rng = np.random.default_rng(4)
  a = rng.uniform(0.6, 0.9, (3, 60))
  per_loss = {"a": a, "b": a + rng.normal(0, 0.01, a.shape), "c": a - 0.3}
  best, vs_best = stats.tied_with_best(per_loss, n_boot=500)
  assert best in ("a", "b")
  other = "b" if best == "a" else "a"
  assert not vs_best[other]["significant"] and vs_best["c"]["significant"]
  raw = {k: v["p_value"] for k, v in vs_best.items()}
  assert {k: v["p_holm"] for k, v in vs_best.items()} == pytest.approx(stats.holm(raw))


def test_per_image_metrics_by_hand():
  labels = np.zeros((3, 6, 6), int)
  preds = np.zeros((3, 6, 6), int)
  labels[0, 1:3, 1:3] = 1  # 4 pixels
  preds[0, 1:3, 1:4] = 1  # 6 pixels, 4 of them true: Dice 8/10, IoU 4/6
  labels[1, 0, 0] = labels[1, 5, 5] = 1  # two components, nothing predicted: Dice 0
  preds[2, 2, 2] = 1  # empty truth: no Dice, one false-positive image
  labels[0, 5, 5] = 255  # ignored pixel
  preds[0, 5, 5] = 1
  m = evaluation.per_image_metrics(preds, labels, 2)
  np.testing.assert_allclose(m["dice"], [0.8, 0.0, np.nan])
  np.testing.assert_allclose(m["iou"], [4 / 6, 0.0, np.nan])
  np.testing.assert_allclose(m["betti0_error"], [0, 2, 1])
  assert m["fp_images"] == 1
  np.testing.assert_allclose(m["fg_pixels_pred"], [6, 0, 1])
  np.testing.assert_allclose(m["valid_pixels"], [35, 36, 36])
  # HD95 of image 0 (the ignored pixel left out): the extra column is 1 px from the truth.
  assert m["hd95"][0] == pytest.approx(1.0)
  assert np.isnan(m["hd95"][1])
  # NSD at 1 px: every surface pixel (all 10 are surface) within 1 px of the other surface; at
  # 0.5 px the extra column's 2 pixels are not: 8/10. Image 1: the truth has the class, the
  # prediction not: 0. Image 2: no truth: undefined, like Dice.
  np.testing.assert_allclose(m["nsd"], [1.0, 0.0, np.nan])
  strict = evaluation.per_image_metrics(preds, labels, 2, nsd_tolerance=0.5, hd95=False)
  np.testing.assert_allclose(strict["nsd"], [0.8, 0.0, np.nan])
  assert np.isnan(strict["hd95"]).all()
  assert np.isnan(evaluation.per_image_metrics(preds, labels, 2, nsd=False)["nsd"]).all()
  assert evaluation.collapse(m) is None
  assert evaluation.collapse({"fg_pixels_pred": [0, 0], "valid_pixels": [9, 9]}) == "no foreground"
  assert evaluation.collapse({"fg_pixels_pred": [9, 9], "valid_pixels": [9, 9]}) == (
    "foreground everywhere"
  )


def test_multiclass_per_image_and_components_reference():
  rng = np.random.default_rng(5)
  labels = rng.integers(0, 3, (4, 10, 10))
  preds = rng.integers(0, 3, (4, 10, 10))
  m = evaluation.per_image_metrics(preds, labels, 3, hd95=False)
  for i in range(4):
    for j, c in enumerate((1, 2)):
      p, t = preds[i] == c, labels[i] == c
      assert m["dice_per_class"][i, j] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()))
      assert m["nsd_per_class"][i, j] == metrics.surface_dice(p, t)
    b = sum(
      abs(
        ndimage.label(preds[i] == c, np.ones((3, 3)))[1]
        - ndimage.label(labels[i] == c, np.ones((3, 3)))[1]
      )
      for c in (1, 2)
    )
    assert m["betti0_error"][i] == b
  np.testing.assert_allclose(m["dice"], m["dice_per_class"].mean(axis=1))
  np.testing.assert_allclose(m["nsd"], m["nsd_per_class"].mean(axis=1))


def test_threshold_free_by_hand():
  probs = np.array([[0.9, 0.8, 0.7, 0.6]])
  labels = np.array([[1, 0, 1, 0]])
  tf = evaluation.threshold_free(probs, labels)
  # Ranked: hit (P 1, R 1/2), miss, hit (P 2/3, R 1): AP = 1/2 * 1 + 1/2 * 2/3.
  assert tf["auprc"] == pytest.approx(0.5 + 1 / 3)
  assert tf["dice_at_0.5"] == pytest.approx(2 * 2 / (4 + 2))  # all four above 0.5
  # p > t for t in [0.6, 0.7) keeps 0.9, 0.8, 0.7: TP 2, Dice 4/5.
  assert tf["best_dice"] == pytest.approx(0.8) and tf["best_threshold"] == pytest.approx(0.6)
  assert tf["foreground_share"] == 0.5
  tied = evaluation.threshold_free(np.array([0.5, 0.5, 0.1]), np.array([1, 0, 255]))
  assert tied["auprc"] == pytest.approx(0.5)  # one threshold for tied scores
  with pytest.raises(ValueError, match="probabilities"):
    evaluation.threshold_free(np.array([1.5]), np.array([1]))


def _run(dice_curve, *, status="trained", eval_=None, final=None):
  steps = [100, 200, 300, 400][-len(dice_curve) :]
  return {
    "status": status,
    "curves": {"train_loss": [0.5], "val_step": steps, "val_dice": dice_curve},
    "final": {"dice_mean": final if final is not None else dice_curve[-1]},
    "eval": eval_,
  }


def test_run_flags():
  ok = {"fg_pixels_pred": [5], "valid_pixels": [100], "threshold_free": None}
  assert (
    verdict.run_flags(_run([0.5, 0.8, 0.85, 0.855], eval_=ok), spread=0.0, total_steps=400) == []
  )
  rising = _run([0.2, 0.4, 0.6, 0.8], eval_=ok)
  assert verdict.run_flags(rising, spread=0.05, total_steps=400) == ["not_converged"]
  assert verdict.run_flags(rising, spread=0.3, total_steps=400) == []  # within the seed spread
  empty = {
    "fg_pixels_pred": [0],
    "valid_pixels": [100],
    "threshold_free": {"best_dice": 0.6, "dice_at_0.5": 0.0, "best_threshold": 0.2},
  }
  flags = verdict.run_flags(_run([0.0, 0.0], eval_=empty), spread=0.0, total_steps=400)
  assert flags == ["collapsed", "miscalibrated"]
  diverged = _run([0.1], status="diverged")
  assert verdict.run_flags(diverged, spread=0.0, total_steps=400) == ["diverged"]


def _eval(dice):
  n = len(dice)
  return {
    "dice": np.asarray(dice, float),
    "iou": np.asarray(dice, float) / 2,
    "nsd": np.asarray(dice, float) / 4,
    "hd95": np.full(n, 2.0),
    "betti0_error": np.zeros(n),
    "fg_pixels_pred": np.ones(n),
    "valid_pixels": np.full(n, 100.0),
    "fp_images": 0,
    "threshold_free": None,
  }


def test_analyse_verdict_names_ties_and_significant_differences():
  rng = np.random.default_rng(6)
  good = rng.uniform(0.7, 0.9, (2, 40))
  runs = {
    "cross_entropy": {s: _run([0.3], eval_=_eval(good[s] - 0.3)) for s in range(2)},
    "dice": {s: _run([0.8], eval_=_eval(good[s])) for s in range(2)},
    "dice_ce": {s: _run([0.8], eval_=_eval(good[s] + rng.normal(0, 0.01, 40))) for s in range(2)},
  }
  a = verdict.analyse(
    runs, baseline="cross_entropy", class_names=["bg", "fg"], total_steps=400, n_boot=300
  )
  assert a["ranking"][-1] == "cross_entropy" and a["best"] in ("dice", "dice_ce")
  r = a["results"]
  assert r["dice"]["tied_with_best"] and r["dice_ce"]["tied_with_best"]
  assert not r["cross_entropy"]["tied_with_best"]
  assert r["cross_entropy"]["vs_baseline"] is None
  assert r["dice"]["vs_baseline"]["significant"] and r["dice"]["vs_baseline"]["diff"] > 0.29
  text = a["verdict"]
  assert "tied with it" in text and "this data cannot separate them" in text
  assert "beat it (p < 0.001)" in text and "Significantly below it: `cross_entropy`" in text
  assert set(r["dice"]) >= {"dice_mean", "iou_mean", "hd95", "vs_baseline", "vs_best", "runs"}
  # NSD beside Dice, with the same statistics: here a quarter of each per-image Dice.
  nsd = r["dice"]["nsd_mean"]
  assert set(nsd) == {"mean", "std", "ci95", "per_seed"}
  assert nsd["per_seed"] == pytest.approx(list(good.mean(axis=1) / 4))
  assert nsd["ci95"][0] < nsd["mean"] < nsd["ci95"][1]
  # An evaluation cached before NSD existed has no 'nsd': its NSD is n/a, the rest unchanged.
  for run in runs["dice"].values():
    del run["eval"]["nsd"]
  again = verdict.analyse(
    runs, baseline="cross_entropy", class_names=["bg", "fg"], total_steps=400, n_boot=300
  )
  assert again["results"]["dice"]["nsd_mean"]["mean"] is None
  assert again["results"]["dice"]["dice_mean"] == r["dice"]["dice_mean"]
  assert verdict.jsonable({"x": np.float32(np.nan), "y": (np.int64(2),)}) == {"x": None, "y": [2]}


def test_analyse_multiclass_reports_each_class_and_topology():
  rng = np.random.default_rng(7)
  per_class = rng.uniform(0.3, 0.9, (2, 30, 2))

  def ev(s, shift):
    e = _eval(per_class[s].mean(axis=1) + shift)
    e["dice_per_class"] = per_class[s] + shift
    e["nsd_per_class"] = per_class[s] / 2
    e["betti0_error"] = np.full(30, 1.0 + s)
    return e

  runs = {n: {s: _run([0.5], eval_=ev(s, k * 0.05)) for s in range(2)} for k, n in enumerate("ab")}
  a = verdict.analyse(
    runs, baseline="a", class_names=["bg", "x", "y"], total_steps=400, topology=True, n_boot=100
  )
  r = a["results"]["b"]
  assert r["dice/x"]["mean"] == pytest.approx(per_class[..., 0].mean() + 0.05)
  assert r["dice/y"]["mean"] == pytest.approx(per_class[..., 1].mean() + 0.05)
  assert r["nsd/y"]["mean"] == pytest.approx(per_class[..., 1].mean() / 2)
  assert r["betti0_error"]["per_seed"] == [1.0, 2.0]
