r"""From the runs of a comparison to statistics, flags and a verdict in words.

:func:`analyse` takes the runs of :func:`seg_jax.choosing.run.run_comparison` (per loss, per
seed: status, learning curves and the per-image evaluation) and returns, per loss, the
statistics of :mod:`seg_jax.choosing.stats`, the paired comparison with the baseline and with
the best loss, the flags of every run, a ranking and the verdict paragraph.

Flags of a run (per loss and seed):

* ``diverged``: training stopped on a non-finite loss or gradient (no model to score).
* ``collapsed``: on the evaluation split the run predicts no foreground pixel at all, or
  foreground on at least 95 % of the pixels
  (:data:`seg_jax.choosing.evaluation.EVERYWHERE_FRACTION`).
* ``not_converged``: the validation ``dice_mean`` rose over the last quarter of the schedule
  (from the last evaluation at or before 75 % of the steps to the final one) by more than the
  loss's seed spread (the standard deviation over seeds of the final validation ``dice_mean``),
  and by more than :data:`MIN_RISE`: more steps would likely change the result.
* ``miscalibrated`` (binary data): the Dice at the best probability threshold exceeds the Dice at
  0.5 by more than :data:`MISCALIBRATION_MARGIN`: the model has learned the structures, but its
  probabilities sit on the wrong side of 0.5 (often at short schedules), which a fixed threshold
  reads as "learned nothing".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from seg_jax.choosing import evaluation, stats

FLAGS = ("collapsed", "diverged", "not_converged", "miscalibrated")
MIN_RISE = 0.01
MISCALIBRATION_MARGIN = 0.10
LAST_PART = 0.25  # "The last 25 % of the schedule" of the not_converged flag.
# Per-image metrics summarised for every loss: name in the summary -> key of the evaluation.
METRICS = {"dice_mean": "dice", "iou_mean": "iou", "nsd_mean": "nsd", "hd95": "hd95"}
TOPOLOGY_METRIC = ("betti0_error", "betti0_error")


def _rise(curve: Mapping, total_steps: int) -> float | None:
  """The validation dice_mean rise over the last quarter of the schedule (None: not measured)."""
  steps, dice = curve.get("val_step") or [], curve.get("val_dice") or []
  points = dict(zip(steps, dice, strict=True))
  if total_steps not in points:
    return None
  before = [s for s in points if s <= (1 - LAST_PART) * total_steps]
  if not before:
    return None
  return float(points[total_steps] - points[max(before)])


def _final_dice(run: Mapping) -> float | None:
  f = run.get("final") or {}
  v = f.get("dice_mean")
  return float(v) if v is not None and math.isfinite(v) else None


def run_flags(run: Mapping, *, spread: float, total_steps: int) -> list[str]:
  """The flags (module docstring) of one run, in the order of :data:`FLAGS`."""
  out = []
  ev = run.get("eval")
  if ev is not None and evaluation.collapse(ev) is not None:
    out.append("collapsed")
  losses = (run.get("curves") or {}).get("train_loss") or []
  if run.get("status") == "diverged" or any(not math.isfinite(v) for v in losses):
    out.append("diverged")
  rise = _rise(run.get("curves") or {}, total_steps)
  if rise is not None and rise > max(spread, MIN_RISE):
    out.append("not_converged")
  free = (ev or {}).get("threshold_free")
  if free and free["best_dice"] - free["dice_at_0.5"] > MISCALIBRATION_MARGIN:
    out.append("miscalibrated")
  return out


def _per_loss_arrays(runs, key: str, num_images: int, column: int | None = None):
  """Loss -> ``(seeds, images)`` of evaluation ``key`` (NaN rows for runs without one, or whose
  cached evaluation predates the metric)."""
  out = {}
  for name, by_seed in runs.items():
    rows = []
    for seed in sorted(by_seed):
      ev = by_seed[seed].get("eval")
      if ev is None or key not in ev:
        rows.append(np.full(num_images, np.nan))
      else:
        v = np.asarray(ev[key], np.float64)
        rows.append(v[:, column] if column is not None else v)
    out[name] = np.stack(rows)
  return out


def _seed_spread(by_seed: Mapping) -> float:
  finals = [d for d in (_final_dice(r) for r in by_seed.values()) if d is not None]
  return float(np.std(finals, ddof=1)) if len(finals) > 1 else 0.0


def analyse(
  runs: Mapping[str, Mapping[int, Mapping]],
  *,
  baseline: str,
  class_names: Sequence[str],
  total_steps: int,
  topology: bool = False,
  n_boot: int = stats.N_BOOT,
) -> dict:
  """Statistics, flags, ranking and verdict of a comparison.

  Args:
    runs: loss -> seed -> run (``status``, ``curves``, ``final``, ``eval``: the per-image
      evaluation of :func:`seg_jax.choosing.run.evaluate_run`, or ``None``).
    baseline: the loss the others are tested against.
    class_names: the data set's classes (class 0 the background).
    total_steps: the schedule's length (for ``not_converged``).
    topology: also summarise the Betti-0 error.
    n_boot: bootstrap replicates.

  Returns:
    ``{'results', 'ranking', 'best', 'verdict', 'protocol'}``. ``results[loss]`` holds
    ``dice_mean``, ``iou_mean``, ``nsd_mean`` (normalised surface Dice at 1 px), ``hd95`` (and
    ``betti0_error`` with ``topology``; ``dice/<class>`` and ``nsd/<class>`` for multiclass
    data), each ``{'mean', 'std', 'ci95', 'per_seed'}`` over per-image values;
    ``vs_baseline`` and ``vs_best`` (``{'diff', 'ci95', 'p_value', 'p_holm', 'significant'}``,
    ``None`` for the loss itself); ``tied_with_best``; ``runs`` (per seed, as a string:
    ``status``, ``flags``, ``collapse``, ``final_dice_mean``, ``threshold_free``, ``rise``,
    ``train_time_s``, ``wall_s``, ``error``, ``workdir``).
  """
  sizes = {len(r["eval"]["dice"]) for s in runs.values() for r in s.values() if r.get("eval")}
  if len(sizes) > 1:
    raise ValueError(f"analyse: runs were evaluated on different numbers of images {sizes}.")
  num_images = sizes.pop() if sizes else 0
  results: dict[str, dict] = {}
  for name, by_seed in runs.items():
    spread = _seed_spread(by_seed)
    results[name] = {
      "runs": {
        str(seed): {
          "status": r.get("status"),
          "flags": run_flags(r, spread=spread, total_steps=total_steps),
          "collapse": evaluation.collapse(r["eval"]) if r.get("eval") else None,
          "final_dice_mean": _final_dice(r),
          "threshold_free": (r.get("eval") or {}).get("threshold_free"),
          "fp_images": (r.get("eval") or {}).get("fp_images"),
          "rise": _rise(r.get("curves") or {}, total_steps),
          "train_time_s": r.get("train_time_s"),
          "steps_per_sec": r.get("steps_per_sec"),
          "wall_s": r.get("wall_s"),
          "error": r.get("error"),
          "workdir": r.get("workdir"),
          "test_dice_mean": (r.get("test") or {}).get("dice_mean"),
        }
        for seed, r in sorted(by_seed.items())
      },
      "seeds_evaluated": sum(r.get("eval") is not None for r in by_seed.values()),
    }
  analysis = {"results": results, "ranking": [], "best": None, "verdict": "", "protocol": PROTOCOL}
  if not num_images:
    analysis["verdict"] = "No run produced a model to evaluate: nothing to compare."
    return analysis
  metrics = dict(METRICS)
  if topology:
    metrics[TOPOLOGY_METRIC[0]] = TOPOLOGY_METRIC[1]
  arrays = {m: _per_loss_arrays(runs, key, num_images) for m, key in metrics.items()}
  if len(class_names) > 2:
    for j, c in enumerate(class_names[1:]):
      arrays[f"dice/{c}"] = _per_loss_arrays(runs, "dice_per_class", num_images, j)
      arrays[f"nsd/{c}"] = _per_loss_arrays(runs, "nsd_per_class", num_images, j)
  for m, per_loss in arrays.items():
    for name, x in per_loss.items():
      results[name][m] = stats.summarize(x, n_boot=n_boot)
  dice = {k: v for k, v in arrays["dice_mean"].items() if np.isfinite(v).any()}
  vs_base = stats.compare_to(dice, baseline, n_boot=n_boot) if baseline in dice else {}
  best, vs_best = stats.tied_with_best(dice, n_boot=n_boot)
  for name in results:
    results[name]["vs_baseline"] = vs_base.get(name)
    results[name]["vs_best"] = vs_best.get(name)
    results[name]["tied_with_best"] = name == best or (
      name in vs_best and not vs_best[name]["significant"]
    )
  ranking = sorted(dice, key=lambda k: -results[k]["dice_mean"]["mean"])
  ranking += [k for k in results if k not in ranking]
  analysis.update(ranking=ranking, best=best)
  analysis["verdict"] = verdict_text(results, ranking, best, baseline, num_images)
  return analysis


def fmt_p(p: float | None) -> str:
  """``p < 0.001`` or ``p = 0.012``."""
  if p is None:
    return "p n/a"
  return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _ci(ci) -> str:
  lo, hi = ci
  return "n/a" if lo is None or hi is None else f"[{lo:+.3f}, {hi:+.3f}]"


def _names(names: Sequence[str]) -> str:
  quoted = [f"`{n}`" for n in names]
  return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def verdict_text(
  results: Mapping[str, Mapping], ranking: Sequence[str], best: str, baseline: str, num_images: int
) -> str:
  """The verdict paragraph: the best loss, the losses tied with it, those below it, how each
  fares against the baseline, and the runs whose flags change how to read the numbers."""
  b = results[best]
  seeds = len(b["runs"])
  d = b["dice_mean"]
  parts = [
    f"On this data ({seeds} seed(s) x {num_images} validation images), `{best}` has the highest "
    f"mean per-image Dice ({d['mean']:.3f}, 95 % CI [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}])."
  ]
  compared = [n for n in ranking if n != best and results[n].get("vs_best")]
  tied = [n for n in compared if not results[n]["vs_best"]["significant"]]
  below = [n for n in compared if results[n]["vs_best"]["significant"]]
  if tied:
    details = "; ".join(
      f"`{n}` {results[n]['vs_best']['diff']:+.3f}, 95 % CI {_ci(results[n]['vs_best']['ci95'])}, "
      f"{fmt_p(results[n]['vs_best']['p_holm'])}"
      for n in tied
    )
    verb = "is" if len(tied) == 1 else "are"
    parts.append(
      f"{_names(tied)} {verb} tied with it (difference not significant: {details}); "
      "this data cannot separate them."
    )
  if below:
    details = "; ".join(
      f"`{n}` {results[n]['vs_best']['diff']:+.3f}, {fmt_p(results[n]['vs_best']['p_holm'])}"
      for n in below
    )
    parts.append(f"Significantly below it: {details}.")
  if baseline in results and any(results[n].get("vs_baseline") for n in results):
    beat = [n for n in ranking if (results[n].get("vs_baseline") or {}).get("significant")]
    better = [n for n in beat if results[n]["vs_baseline"]["diff"] > 0]
    worse = [n for n in beat if results[n]["vs_baseline"]["diff"] < 0]
    same = [n for n in ranking if results[n].get("vs_baseline") and n not in beat]
    if better:
      worst_p = max(results[n]["vs_baseline"]["p_holm"] for n in better)
      verb = "beats" if len(better) == 1 else "all beat"
      bound = fmt_p(worst_p).replace("p = ", "p <= ")
      parts.append(f"Against the baseline `{baseline}`: {_names(better)} {verb} it ({bound}).")
    if worse:
      parts.append(f"{_names(worse)} {'is' if len(worse) == 1 else 'are'} below `{baseline}`.")
    if same:
      verb = "is" if len(same) == 1 else "are"
      parts.append(f"{_names(same)} {verb} not significantly different from `{baseline}`.")
  flagged = []
  for n in ranking:
    for seed, r in results[n]["runs"].items():
      if r["flags"]:
        flagged.append(f"`{n}` seed {seed}: {_flag_words(r)}")
  if flagged:
    parts.append("Read with care: " + "; ".join(flagged) + ".")
  return " ".join(parts)


def _flag_words(r: Mapping) -> str:
  words = []
  for f in r["flags"]:
    if f == "collapsed":
      words.append(f"collapsed ({r['collapse']})")
    elif f == "miscalibrated":
      tf = r["threshold_free"]
      words.append(
        f"miscalibrated (Dice {tf['dice_at_0.5']:.3f} at 0.5 but {tf['best_dice']:.3f} at "
        f"threshold {tf['best_threshold']:.2f}: learned, but below 0.5)"
      )
    elif f == "not_converged":
      words.append(f"not converged (validation Dice +{r['rise']:.3f} over the last quarter)")
    else:
      words.append(f)
  return ", ".join(words)


PROTOCOL = (
  "Every loss is trained once per seed with everything else identical; seed k gives every "
  "loss the same initial weights, data order and augmentation. Each run's final model "
  "predicts every image of the evaluation split, and the foreground Dice is computed per image "
  "(images whose truth lacks the class are left out of that class's Dice, for every run alike). "
  "A loss's value is the mean over seeds of its mean over images; its 95 % confidence interval "
  "is a hierarchical percentile bootstrap (2000 replicates, seeded) resampling seeds and images. "
  "Two losses are compared on the paired differences (same seed, same image): the mean "
  "difference, its bootstrap interval, and a two-sided Wilcoxon signed-rank test over images of "
  "the seed-averaged differences, Holm-corrected over the losses compared with the same "
  "reference. A difference is called significant when the corrected p is below 0.05 and the "
  "interval excludes 0; losses not significantly below the best are tied with it."
)


def jsonable(obj):
  """``obj`` with NumPy scalars as Python numbers, non-finite floats as ``None``, and tuples as
  lists (so that ``json.dump(allow_nan=False)`` accepts it)."""
  if isinstance(obj, Mapping):
    return {str(k): jsonable(v) for k, v in obj.items()}
  if isinstance(obj, list | tuple):
    return [jsonable(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return jsonable(obj.tolist())
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj
