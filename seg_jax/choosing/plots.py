r"""The figures of a comparison: learning curves over seeds, per-image Dice, predictions.

Every function draws with matplotlib's object API (no pyplot state, safe in threads and
notebooks) and returns the path it wrote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ml_collections
import numpy as np


def title(config: ml_collections.ConfigDict, num_seeds: int) -> str:
  """``'synthetic_shapes/thin, 400 steps, 3 seeds'``."""
  d = config.data
  data = d.name + (f"/{d.config}" if d.name == "synthetic_shapes" else "")
  return f"{data}, {config.train.steps} steps, {num_seeds} seed(s)"


def _figure(width: float, height: float):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _display_image(image: np.ndarray) -> tuple[np.ndarray, str | None]:
  image = np.asarray(image, np.float32)
  if image.shape[-1] == 3:
    lo, hi = float(image.min()), float(image.max())
    return ((image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)), None
  return image[..., 0], "gray"


def _foreground_dice(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
  valid = (truth >= 0) & (truth < num_classes)
  p, t = (pred > 0) & valid, (truth > 0) & valid
  den = int(p.sum() + t.sum())
  return 1.0 if den == 0 else float(2 * (p & t).sum() / den)


def _class_colours(num_classes: int) -> dict:
  """``cmap`` and ``norm`` giving each class one distinct colour (black/white when binary)."""
  from matplotlib import colormaps
  from matplotlib.colors import BoundaryNorm, ListedColormap

  if num_classes == 2:
    colours = ["black", "white"]
  else:
    base = colormaps["tab10" if num_classes <= 10 else "tab20"]
    colours = [base(i % base.N) for i in range(num_classes)]
  bounds = np.arange(num_classes + 1) - 0.5
  return {"cmap": ListedColormap(colours), "norm": BoundaryNorm(bounds, num_classes)}


def _middle(examples: dict, index: int) -> dict:
  """Slice ``index`` of the first spatial axis of every array of ``examples``."""
  return {
    k: v[:, index] if isinstance(v, np.ndarray) and v.ndim >= 4 else v for k, v in examples.items()
  }


def _first_seed(by_seed: Mapping[int, Mapping]) -> dict:
  run = dict(by_seed[min(by_seed)])
  ev = run.get("eval")
  run["examples"] = ev["examples"] if ev is not None and len(ev["examples"]["pred"]) else None
  return run


def prediction_grid(
  runs: Mapping[str, Mapping[int, Mapping]],
  path: str,
  *,
  class_names: Sequence[str],
  title: str = "",
) -> str | None:
  """The same validation images segmented by each loss (its first seed): image | truth | one
  column per loss.

  Volumes (3-D data) are shown by their middle slice along the first spatial axis; 1-D data is
  not drawn.

  Returns ``path``, or ``None`` if no run has predictions (nothing is drawn).
  """
  runs = {name: _first_seed(by_seed) for name, by_seed in runs.items()}
  with_examples = {k: r["examples"] for k, r in runs.items() if r.get("examples") is not None}
  if not with_examples:
    return None
  ref = next(iter(with_examples.values()))
  if ref["image"].ndim not in (4, 5):  # (N, H, W, C) or (N, D, H, W, C).
    return None
  if ref["image"].ndim == 5:
    middle = ref["image"].shape[1] // 2
    runs = {
      k: dict(r, examples=None if r.get("examples") is None else _middle(r["examples"], middle))
      for k, r in runs.items()
    }
    ref = _middle(ref, middle)
  num, num_classes = len(ref["image"]), len(class_names)
  cols = 2 + len(runs)
  fig = _figure(2.3 * cols + 1.0, 2.4 * num + 0.8)
  axes = fig.subplots(num, cols, squeeze=False)
  kw = {**_class_colours(num_classes), "interpolation": "nearest"}
  mappable = None
  for i in range(num):
    shown, img_cmap = _display_image(ref["image"][i])
    axes[i, 0].imshow(shown, cmap=img_cmap)
    axes[i, 0].set_title(f"validation #{i}", fontsize="small")
    truth = ref["label"][i]
    mappable = axes[i, 1].imshow(np.ma.masked_outside(truth, 0, num_classes - 1), **kw)
    axes[i, 1].set_title("truth", fontsize="small")
    for j, (name, run) in enumerate(runs.items(), 2):
      ax = axes[i, j]
      ex = run.get("examples")
      if ex is None:
        ax.text(0.5, 0.5, run.get("status", "n/a"), ha="center", va="center")
        ax.set_title(name, fontsize="small")
        continue
      ax.imshow(ex["pred"][i], **kw)
      dice = _foreground_dice(ex["pred"][i], truth, num_classes)
      ax.set_title(f"{name}\nDice {dice:.3f}", fontsize="small")
    for ax in axes[i]:
      ax.set_xticks([])
      ax.set_yticks([])
    axes[i, 0].set_ylabel("y (pixels)")
  for ax in axes[-1]:
    ax.set_xlabel("x (pixels)")
  if mappable is not None:
    bar = fig.colorbar(mappable, ax=axes[:, 1:], ticks=range(num_classes), shrink=0.6)
    bar.ax.set_yticklabels(list(class_names))
    bar.set_label("class")
  fig.suptitle(
    "Validation images: image | truth | prediction of each loss (foreground Dice per image)"
    + (f"\n{title}" if title else "")
  )
  fig.savefig(path, dpi=80)
  return path


def _band(curves: Sequence[Mapping], x_key: str, y_key: str):
  """Steps common to all seeds, and the mean, min and max over seeds at each."""
  common = sorted(set.intersection(*(set(c.get(x_key) or []) for c in curves)))
  if not common:
    return None
  ys = np.array(
    [[dict(zip(c[x_key], c[y_key], strict=True))[s] for s in common] for c in curves], float
  )
  return np.array(common), ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def learning_curves(runs: Mapping[str, Mapping[int, Mapping]], path: str, title: str = "") -> str:
  """Training loss and validation ``dice_mean`` against the step: per loss the mean over seeds
  (line) and the range over seeds (band)."""
  fig = _figure(12, 4.5)
  ax_loss, ax_dice = fig.subplots(1, 2)
  values = []
  for k, (name, by_seed) in enumerate(runs.items()):
    colour = f"C{k % 10}"
    curves = [r.get("curves") or {} for r in by_seed.values()]
    for ax, (x_key, y_key) in (
      (ax_loss, ("train_step", "train_loss")),
      (ax_dice, ("val_step", "val_dice")),
    ):
      band = _band(curves, x_key, y_key)
      if band is None:
        continue
      x, mean, lo, hi = band
      ax.plot(x, mean, color=colour, marker="." if ax is ax_loss else "o", label=name)
      if len(curves) > 1:
        ax.fill_between(x, lo, hi, color=colour, alpha=0.2, linewidth=0)
      if ax is ax_loss:
        values += [v for v in np.r_[lo, hi] if np.isfinite(v)]
  # Log scale, so losses of different sizes all show; symmetric log where some loss goes to 0
  # or below (the boundary loss is negative near its optimum), which a log axis would drop.
  if values and min(values) > 0:
    ax_loss.set_yscale("log")
    scale = "log"
  elif values:
    small = [abs(v) for v in values if v != 0]
    ax_loss.set_yscale("symlog", linthresh=min(small) if small else 1e-3)
    scale = "symmetric log"
  else:
    scale = "linear"
  ax_loss.set_xlabel("training step")
  ax_loss.set_ylabel(f"training loss (each loss on its own scale, {scale})")
  ax_loss.set_title("Training loss (mean over seeds, band: min-max)")
  ax_dice.set_xlabel("training step")
  ax_dice.set_ylabel("validation dice_mean (foreground, pooled)")
  ax_dice.set_ylim(0.0, 1.0)
  ax_dice.set_title("Validation Dice (mean over seeds, band: min-max)")
  for ax in (ax_loss, ax_dice):
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(title="loss", fontsize="small")
  if title:
    fig.suptitle(f"Learning curves: {title}")
  fig.savefig(path, dpi=90)
  return path


def per_image_box(
  runs: Mapping[str, Mapping[int, Mapping]], order: Sequence[str], path: str, title: str = ""
) -> str:
  """Box plot of the per-image foreground Dice of each loss (seed-averaged per image), with
  every image drawn as a point over it and each seed's mean as a diamond."""
  fig = _figure(max(6.0, 1.3 * len(order) + 2), 4.8)
  ax = fig.subplots()
  rng = np.random.default_rng(0)  # Horizontal jitter of the points only.
  data, labels = [], []
  for name in order:
    evals = [r["eval"] for r in runs[name].values() if r.get("eval") is not None]
    labels.append(f"{name}\n({len(evals)}/{len(runs[name])} seeds)")
    if not evals:
      data.append(np.array([]))
      continue
    per_seed = np.stack([np.asarray(e["dice"], float) for e in evals])
    with np.errstate(invalid="ignore"):
      counts = np.isfinite(per_seed).sum(axis=0)
      per_image = np.where(counts > 0, np.nansum(per_seed, axis=0) / np.maximum(counts, 1), np.nan)
    data.append(per_image[np.isfinite(per_image)])
  positions = np.arange(1, len(order) + 1)
  drawn = [(pos, values) for pos, values in zip(positions, data, strict=True) if values.size]
  if drawn:
    ax.boxplot([v for _, v in drawn], positions=[p for p, _ in drawn], widths=0.5, showfliers=False)
  for pos, values in zip(positions, data, strict=True):
    if values.size:
      ax.scatter(pos + rng.uniform(-0.18, 0.18, values.size), values, s=5, alpha=0.35, color="C0")
  for pos, name in zip(positions, order, strict=True):
    for r in runs[name].values():
      ev = r.get("eval")
      if ev is not None and np.isfinite(ev["dice"]).any():
        ax.scatter(pos, np.nanmean(ev["dice"]), marker="D", s=30, color="C3", zorder=3)
  ax.scatter([], [], marker="D", s=30, color="C3", label="mean of one seed")
  ax.scatter([], [], s=5, color="C0", label="one image (mean over seeds)")
  ax.set_xticks(positions, labels, fontsize="small")
  ax.set_ylim(-0.02, 1.02)
  ax.set_ylabel("foreground Dice per validation image")
  ax.set_xlabel("loss (best first)")
  ax.grid(True, axis="y", alpha=0.3)
  ax.legend(fontsize="small", loc="lower left")
  ax.set_title("Per-image Dice" + (f": {title}" if title else ""))
  fig.savefig(path, dpi=90)
  return path
