"""``report.md`` of a comparison: the verdict first, then the evidence and how it was made."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import ml_collections

from seg_jax.choosing import evaluation, verdict


def _fmt(value, digits: int = 3) -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "n/a"
  if isinstance(value, float):
    return f"{value:.{digits}f}"
  return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return lines


def mean_ci(s: Mapping | None, digits: int = 3) -> str:
  """``0.851 [0.832, 0.866]`` from a :func:`seg_jax.choosing.stats.summarize` dict."""
  if not s or s.get("mean") is None:
    return "n/a"
  lo, hi = s["ci95"]
  return f"{s['mean']:.{digits}f} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


def _per_seed(s: Mapping | None) -> str:
  return " / ".join(_fmt(v) for v in (s or {}).get("per_seed", [])) or "n/a"


def _vs(c: Mapping | None) -> str:
  if not c:
    return "(reference)"
  lo, hi = c["ci95"]
  star = " *" if c["significant"] else ""
  return f"{c['diff']:+.3f} [{_fmt(lo)}, {_fmt(hi)}], {verdict.fmt_p(c['p_holm'])}{star}"


def _flags(result: Mapping) -> str:
  out = [f"seed {s}: {', '.join(r['flags'])}" for s, r in result["runs"].items() if r["flags"]]
  return "; ".join(out) or "none"


def _setup(summary: Mapping, config: ml_collections.ConfigDict) -> str:
  t, m, d = config.train, config.model, config.data
  data = d.name + (f"/{d.config}" if d.name == "synthetic_shapes" else "")
  seeds = summary["seeds"]
  mode = summary.get("seeds_mode", "sequential")
  trained = "in turn" if mode == "sequential" else "the seeds of a loss as one vmapped program"
  return (
    f"Everything but the loss and the seed is identical across runs: data `{data}` "
    f"({d.image_size}x{d.image_size}); U-Net features={m.features} depth={m.depth} "
    f"norm={m.norm} dtype={m.dtype}; {t.steps} steps of global batch {t.batch_size}, "
    f"{t.optimizer} learning rate {t.learning_rate:g} ({t.schedule}, warm-up "
    f"{t.warmup_steps}), weight decay {t.weight_decay:g}, gradient clip {t.grad_clip_norm:g}; "
    f"seeds {', '.join(map(str, seeds))}, trained {trained} (`--seeds_mode={mode}`). "
    f"Devices: {summary['devices']}."
  )


def _results_table(summary: Mapping) -> list[str]:
  results, baseline = summary["results"], summary["baseline"]
  topo = summary.get("topology")
  header = ["rank", "loss", "Dice [95 % CI]", "per seed", f"vs `{baseline}`", "vs best"]
  header += ["NSD@1px [95 % CI]", "IoU [95 % CI]", "HD95 px [95 % CI]"]
  header += ["Betti-0 error"] if topo else []
  header += ["flags"]
  rows = []
  for k, name in enumerate(summary["ranking"], 1):
    r = results[name]
    tied = " (tied with best)" if r.get("tied_with_best") and name != summary["best"] else ""
    row = [
      str(k),
      f"`{name}`{tied}",
      mean_ci(r.get("dice_mean")),
      _per_seed(r.get("dice_mean")),
      _vs(r.get("vs_baseline")),
      "(best)" if name == summary["best"] else _vs(r.get("vs_best")),
      mean_ci(r.get("nsd_mean")),
      mean_ci(r.get("iou_mean")),
      mean_ci(r.get("hd95"), 2),
    ]
    if topo:
      row.append(mean_ci(r.get("betti0_error"), 2))
    row.append(_flags(r))
    rows.append(row)
  return _table(header, rows)


def _runs_table(summary: Mapping) -> list[str]:
  rows = []
  binary = len(summary["class_names"]) == 2
  for name in summary["ranking"]:
    for seed, r in summary["results"][name]["runs"].items():
      tf = r.get("threshold_free") or {}
      row = [f"`{name}`", seed, r.get("status") or "n/a", ", ".join(r["flags"]) or "-"]
      row += [_fmt(r.get("final_dice_mean")), _fmt(r.get("test_dice_mean"))]
      if binary:
        best = "n/a"
        if tf:
          best = f"{tf['best_dice']:.3f} at {tf['best_threshold']:.2f}"
        row += [_fmt(tf.get("auprc")), _fmt(tf.get("dice_at_0.5")), best]
      row += [_fmt(r.get("rise")), _fmt(r.get("train_time_s"), 1), _fmt(r.get("wall_s"), 1)]
      rows.append(row)
  header = ["loss", "seed", "status", "flags", "val dice_mean (pooled)", "test dice_mean"]
  if binary:
    header += ["AUPRC", "Dice at 0.5", "best Dice at threshold"]
  header += ["val Dice rise, last 25 %", "train time (s)", "wall time (s)"]
  return _table(header, rows)


def _per_class_table(summary: Mapping) -> list[str]:
  classes = summary["class_names"][1:]
  rows = [
    [
      f"`{n}`",
      *(mean_ci(summary["results"][n].get(f"dice/{c}")) for c in classes),
      *(mean_ci(summary["results"][n].get(f"nsd/{c}")) for c in classes),
    ]
    for n in summary["ranking"]
  ]
  header = ["loss", *(f"Dice `{c}` [95 % CI]" for c in classes)]
  header += [f"NSD@1px `{c}` [95 % CI]" for c in classes]
  return _table(header, rows)


def _definitions(summary: Mapping) -> list[str]:
  lines = [
    "Columns: `Dice`, `NSD@1px`, `IoU`, `HD95` are means over seeds of the per-image values on "
    f"the `{summary['eval_split']}` split (foreground classes; an image whose truth lacks a class "
    "is left out of that class's values; HD95 where prediction and truth both have the class), "
    "with their 95 % bootstrap interval. `NSD@1px` is the normalised surface Dice (Nikolov et al. "
    "2021): the share of the predicted and true contours within 1 pixel of each other (0 where "
    "the class is not predicted); Dice counts pixels, NSD rewards boundaries. `vs` columns: "
    "mean paired difference, its 95 % interval and the Holm-corrected Wilcoxon p-value; `*` "
    "marks a significant difference. "
  ]
  if summary.get("topology"):
    lines[0] += (
      "`Betti-0 error`: per image, the absolute difference between the numbers of connected "
      "foreground components of prediction and truth (lower is better; Dice cannot show a "
      "broken thin structure, this can). "
    )
  lines[0] += (
    "`val dice_mean (pooled)` is the trainer's number (one confusion matrix over the split), "
    "which weighs large objects more than the per-image mean."
  )
  every = f"{evaluation.EVERYWHERE_FRACTION:.0%}"
  lines += [
    "",
    "Flags: **collapsed**: predicts no foreground pixel on the split, or foreground on at least "
    f"{every} of its pixels; **diverged**: training stopped on a non-finite loss; "
    "**not_converged**: the validation Dice rose over the last 25 % of the schedule by more "
    f"than the loss's seed spread (and more than {verdict.MIN_RISE}): train longer before "
    "believing the ranking; **miscalibrated** (binary data): the Dice at the best probability "
    f"threshold exceeds the Dice at 0.5 by more than {verdict.MISCALIBRATION_MARGIN}: the model "
    "learned the structures but its probabilities sit below 0.5.",
  ]
  return lines


def write_report(summary: Mapping, path: str, config: ml_collections.ConfigDict) -> str:
  """Writes ``report.md`` from a comparison summary; returns ``path``."""
  d = config.data
  data = d.name + (f"/{d.config}" if d.name == "synthetic_shapes" else "")
  lines = [f"# Loss comparison: {data}", "", "## Verdict", "", summary["verdict"], ""]
  if summary["ranking"]:
    lines += [f"## Results ({summary['eval_split']} split, per image)", ""]
    lines += _results_table(summary) + [""]
    lines += _definitions(summary) + [""]
    if len(summary["class_names"]) > 2:
      lines += ["## Per class", ""] + _per_class_table(summary) + [""]
    lines += ["## Runs", ""] + _runs_table(summary) + [""]
  errors = [
    f"- `{n}` seed {s} ({r['status']}): {r['error'].splitlines()[0]}"
    for n, res in summary["results"].items()
    for s, r in res["runs"].items()
    if r.get("error")
  ]
  if errors:
    lines += ["Runs that did not finish:", "", *errors, ""]
  lines += ["## Protocol", "", verdict.PROTOCOL, "", _setup(summary, config), ""]
  if summary.get("command"):
    lines += ["Command:", "", "```", summary["command"], "```", ""]
  figures = summary.get("figures", {})
  captions = {
    "learning_curves": "Learning curves",
    "per_image_dice": "Per-image Dice",
    "predictions": "Validation predictions (seed 0)",
  }
  if figures:
    lines += ["## Figures", ""]
    lines += [f"![{captions[k]}]({os.path.basename(v)})" for k, v in figures.items()] + [""]
  lines += ["## Loss options", ""]
  for name in summary["losses"]:
    opts = summary["options"][name]
    shown = ", ".join(f"{k}={v!r}" for k, v in sorted(opts.items()))
    lines.append(f"- `{name}`: {shown or 'the loss defaults'}")
  lines += [
    "",
    "Each run's directory (`<loss>/seed<k>/` next to this file) holds `metrics.jsonl`, "
    "`tensorboard/`, `config.json`, `checkpoints/` and `compare_eval.npz` (its per-image "
    "values).",
    "",
  ]
  with open(path, "w") as fh:
    fh.write("\n".join(lines))
  return path
