r"""Statistics of a loss comparison: pure NumPy/SciPy functions over per-image metrics.

A comparison trains every loss with seeds ``0 .. S-1`` and scores each run on the same ``I``
validation images, so the evidence for one loss and one metric is an ``(S, I)`` array
``x[s, i]`` (NaN where the metric is undefined for that image, e.g. HD95 with an empty
prediction). Two losses are *paired* twice: by image (the same validation image) and by seed
(seed ``s`` gives both losses the same initialisation, data order and augmentation).

The protocol (the report quotes it):

* **Estimate** of a loss: the mean over seeds of the per-seed mean over images,
  :math:`\hat\mu = \frac1S \sum_s \frac1{I_s}\sum_{i \text{ defined}} x_{s,i}`.
* **95 % confidence interval**: hierarchical percentile bootstrap (:func:`bootstrap_ci`). Each
  replicate resamples the seeds with replacement, and the images with replacement, and
  recomputes :math:`\hat\mu`; the interval holds the central 95 % of ``n_boot`` replicates. Both
  sources of variation (which seed, which images) are in the interval, so a loss whose seeds
  disagree gets a wide interval even on many images. With one seed only images are resampled.
* **Paired difference** against a reference loss (:func:`paired_difference`): the same estimate
  and bootstrap on :math:`d_{s,i} = x_{s,i} - y_{s,i}` (seed and image indices resampled jointly
  for both losses), and a two-sided Wilcoxon signed-rank test over images of the seed-averaged
  differences :math:`\bar d_i = \frac1S\sum_s d_{s,i}` (``scipy.stats.wilcoxon``; images whose
  difference is undefined are left out; all differences zero gives p = 1).
* **Multiple comparisons**: Holm's step-down correction over the losses compared with the same
  reference (:func:`holm`).
* **Significant** (:func:`significant`): Holm-corrected p below ``alpha`` *and* a confidence
  interval that excludes 0. The test over images alone would call a difference driven by one
  collapsed seed significant (its images all move together); the bootstrap over seeds does not.

References:
  B. Efron and R. Tibshirani, "An Introduction to the Bootstrap", 1993 (percentile intervals;
  resampling at several levels for nested data); F. Wilcoxon, "Individual comparisons by ranking
  methods", Biometrics Bulletin 1945; S. Holm, "A simple sequentially rejective multiple test
  procedure", Scand. J. Statistics 1979; J. Ma et al., "Loss odyssey in medical image
  segmentation", Medical Image Analysis 2021 (paired tests over cases between losses).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as sp_stats

N_BOOT = 2000
LEVEL = 0.95
ALPHA = 0.05


def _as_runs(values, name: str = "values") -> np.ndarray:
  x = np.asarray(values, np.float64)
  if x.ndim == 1:
    x = x[None]
  if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
    raise ValueError(f"{name} must be (seeds, images) or (images,), got shape {np.shape(values)}.")
  return x


def estimate(values) -> float:
  """The mean over seeds of the per-seed mean over the defined images (module docstring).

  Args:
    values: ``(seeds, images)`` or ``(images,)``; NaN = undefined.

  Returns:
    The estimate, NaN if no value is defined.
  """
  x = _as_runs(values)
  defined = np.isfinite(x)
  counts = defined.sum(axis=1)
  sums = np.where(defined, x, 0.0).sum(axis=1)
  seed_means = sums[counts > 0] / counts[counts > 0]
  return float(seed_means.mean()) if seed_means.size else float("nan")


def _replicates(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
  """``n_boot`` bootstrap estimates of ``x`` (seeds and images resampled)."""
  s, i = x.shape
  seed_idx = rng.integers(0, s, size=(n_boot, s)) if s > 1 else np.zeros((n_boot, 1), int)
  img_idx = rng.integers(0, i, size=(n_boot, i))
  out = np.empty(n_boot)
  chunk = max(1, 4_000_000 // (s * i))  # Bound the memory of the gathered replicates.
  for start in range(0, n_boot, chunk):
    sl = slice(start, start + chunk)
    g = x[seed_idx[sl, :, None], img_idx[sl, None, :]]  # (chunk, S, I)
    defined = np.isfinite(g)
    counts = defined.sum(axis=2)
    sums = np.where(defined, g, 0.0).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
      seed_means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    valid = np.isfinite(seed_means)
    n_valid = valid.sum(axis=1)
    tot = np.where(valid, seed_means, 0.0).sum(axis=1)
    out[sl] = np.where(n_valid > 0, tot / np.maximum(n_valid, 1), np.nan)
  return out


def bootstrap_ci(
  values, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> tuple[float, float]:
  """Hierarchical percentile-bootstrap confidence interval of :func:`estimate`.

  Args:
    values: ``(seeds, images)`` or ``(images,)``; NaN = undefined.
    n_boot: bootstrap replicates.
    level: coverage of the interval, in (0, 1).
    seed: seed of the resampling (the interval is a pure function of the inputs and ``seed``).

  Returns:
    ``(lo, hi)``; ``(nan, nan)`` if no value is defined.
  """
  if not 0 < level < 1:
    raise ValueError(f"level must be in (0, 1), got {level!r}.")
  if int(n_boot) < 10:
    raise ValueError(f"n_boot must be >= 10, got {n_boot!r}.")
  x = _as_runs(values)
  if not np.isfinite(x).any():
    return float("nan"), float("nan")
  reps = _replicates(x, int(n_boot), np.random.default_rng(seed))
  reps = reps[np.isfinite(reps)]
  tail = 100 * (1 - level) / 2
  lo, hi = np.percentile(reps, [tail, 100 - tail])
  return float(lo), float(hi)


def summarize(values, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
  """``{'mean', 'std', 'ci95', 'per_seed'}`` of one loss and metric.

  ``per_seed`` holds each seed's mean over its defined images (``None`` where none is); ``std``
  is their sample standard deviation (``ddof=1``; ``None`` with fewer than two seeds).
  """
  x = _as_runs(values)
  per_seed = [estimate(row) for row in x]
  finite = [v for v in per_seed if np.isfinite(v)]
  lo, hi = bootstrap_ci(x, n_boot=n_boot, seed=seed)
  return {
    "mean": _num(estimate(x)),
    "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
    "ci95": [_num(lo), _num(hi)],
    "per_seed": [_num(v) for v in per_seed],
  }


def _num(v: float) -> float | None:
  return float(v) if v is not None and np.isfinite(v) else None


def wilcoxon_p(differences) -> float:
  """Two-sided Wilcoxon signed-rank p-value of paired differences (NaN entries left out).

  All differences zero (or none defined) gives 1.0: no evidence of a difference. Zero
  differences are dropped (Wilcoxon's original treatment, ``zero_method='wilcox'``).
  """
  d = np.asarray(differences, np.float64).ravel()
  d = d[np.isfinite(d)]
  if d.size == 0 or not np.any(d != 0):
    return 1.0
  return float(sp_stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_difference(values, reference, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
  """Paired comparison of one loss (``values``) with a reference loss on the same images.

  Args:
    values: ``(seeds, images)`` of the loss.
    reference: ``(seeds, images)`` of the reference, the same shape: seed ``s`` and image ``i``
      of both are paired.
    n_boot: bootstrap replicates of the interval.
    seed: seed of the resampling.

  Returns:
    ``{'diff', 'ci95', 'p_value'}``: the estimate of ``values - reference``, its hierarchical
    bootstrap interval and the Wilcoxon p-value over images (module docstring).
  """
  x, y = _as_runs(values, "values"), _as_runs(reference, "reference")
  if x.shape != y.shape:
    raise ValueError(
      f"paired_difference: values {x.shape} and reference {y.shape} must have the same "
      "(seeds, images) shape: the runs are paired by seed and image."
    )
  d = x - y  # NaN where either is undefined.
  lo, hi = bootstrap_ci(d, n_boot=n_boot, seed=seed)
  with warnings.catch_warnings():  # An image undefined in every seed: NaN, left out.
    warnings.simplefilter("ignore", RuntimeWarning)
    per_image = np.nanmean(d, axis=0)
  return {
    "diff": _num(estimate(d)),
    "ci95": [_num(lo), _num(hi)],
    "p_value": wilcoxon_p(per_image),
  }


def holm(p_values: Sequence[float] | Mapping[str, float]):
  """Holm's step-down adjusted p-values.

  With the ``m`` p-values sorted increasingly, :math:`p_{(1)} \\le \\dots \\le p_{(m)}`, the
  adjusted values are :math:`\\tilde p_{(k)} = \\min(1, \\max_{j \\le k} (m - j + 1)\\,p_{(j)})`.
  Rejecting where :math:`\\tilde p < \\alpha` controls the family-wise error rate at
  :math:`\\alpha`.

  Args:
    p_values: a sequence, or a mapping name -> p.

  Returns:
    The adjusted values, in the input's order and type (list or dict).
  """
  if isinstance(p_values, Mapping):
    keys = list(p_values)
    return dict(zip(keys, holm([p_values[k] for k in keys]), strict=True))
  p = np.asarray(p_values, np.float64)
  if p.ndim != 1 or np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
    raise ValueError(f"holm: p-values must be numbers in [0, 1], got {list(p_values)!r}.")
  m = p.size
  order = np.argsort(p, kind="stable")
  scaled = (m - np.arange(m)) * p[order]
  adjusted = np.minimum(1.0, np.maximum.accumulate(scaled))
  out = np.empty(m)
  out[order] = adjusted
  return out.tolist()


def significant(comparison: Mapping, *, alpha: float = ALPHA) -> bool:
  """Whether a :func:`paired_difference` result (with ``p_holm`` added) is a real difference:
  Holm-corrected p below ``alpha`` and a confidence interval that excludes 0."""
  lo, hi = comparison["ci95"]
  p = comparison.get("p_holm", comparison["p_value"])
  if lo is None or hi is None or p is None:
    return False
  return p < alpha and (lo > 0 or hi < 0)


def compare_to(
  per_loss: Mapping[str, np.ndarray], reference: str, *, n_boot: int = N_BOOT, seed: int = 0
) -> dict[str, dict]:
  """:func:`paired_difference` of every loss against ``reference``, Holm-corrected together.

  Args:
    per_loss: loss name -> ``(seeds, images)``, all the same shape.
    reference: the name of the reference loss (a key of ``per_loss``).

  Returns:
    Name -> ``{'diff', 'ci95', 'p_value', 'p_holm', 'significant'}`` for every loss but the
    reference.
  """
  if reference not in per_loss:
    raise ValueError(f"compare_to: reference {reference!r} is not one of {list(per_loss)}.")
  out = {
    name: paired_difference(x, per_loss[reference], n_boot=n_boot, seed=seed)
    for name, x in per_loss.items()
    if name != reference
  }
  if out:
    adjusted = holm({k: v["p_value"] for k, v in out.items()})
    for k, v in out.items():
      v["p_holm"] = adjusted[k]
      v["significant"] = significant(v)
  return out


def tied_with_best(
  per_loss: Mapping[str, np.ndarray], *, higher_is_better: bool = True, **kw
) -> tuple[str, dict[str, dict]]:
  """The best loss by :func:`estimate` and the comparison of every other loss with it.

  Returns:
    ``(best, comparisons)``: ``comparisons`` as :func:`compare_to` against ``best``; a loss with
    ``significant=False`` there is tied with the best.
  """
  scores = {k: estimate(v) for k, v in per_loss.items()}
  defined = {k: v for k, v in scores.items() if np.isfinite(v)}
  if not defined:
    raise ValueError("tied_with_best: no loss has a defined value.")
  pick = max if higher_is_better else min
  best = pick(defined, key=defined.get)
  return best, compare_to({k: per_loss[k] for k in defined}, best, **kw)
