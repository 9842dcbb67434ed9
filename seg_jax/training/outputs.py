r"""What a training run writes to its workdir: metrics.jsonl, TensorBoard events, config, PNG.

* ``metrics.jsonl``: one JSON object per line, ``{"step": s, "split": name, <metric>: value,
  ...}``: ``split='train'`` records hold the training loss averaged over the last ``log_every``
  steps, the learning rate, the gradient norm and the speed; ``split='validation'`` (and
  ``'test'``) records one evaluation over the whole split (:class:`seg_jax.metrics.SegMetrics`
  keys: ``dice_mean``, ``iou_mean``, ``dice/<class>``, ...).
* ``tensorboard/``: the same scalars as TensorBoard events, tagged ``<split>/<metric>``, written
  by tensorboardX (no TensorFlow needed).
* ``config.json``: the resolved configuration.
* ``predictions.png``: validation examples, one row each: image | truth | prediction.
* The console (process 0): :func:`echo` and :func:`summary` lines.

TensorBoard events come from tensorboardX rather than ``clu.metric_writers``: clu's TensorBoard
writer imports TensorFlow (its other one, PyTorch), and clu has no purge of the events after a
resumed step. Only process 0 writes (:class:`MetricWriter` is inert elsewhere). On resume from
step ``r``, records after ``r`` (written by the interrupted run after its last checkpoint) are
dropped from ``metrics.jsonl`` and TensorBoard, since the resumed run writes them again.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CONFIG_FILE = "config.json"
PREDICTIONS_FILE = "predictions.png"


def _jsonable(value):
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def read_metrics(workdir: str) -> list[dict]:
  """All records of ``<workdir>/metrics.jsonl`` (empty list if there is none)."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricWriter:
  """Appends metric records to ``metrics.jsonl`` and TensorBoard.

  Args:
    workdir: output directory.
    enabled: write anything at all (``jax.process_index() == 0``).
    resume_step: if not ``None``, drop records with ``step > resume_step`` left by an earlier
      run and purge TensorBoard events after it.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int | None = None):
    self.enabled = enabled
    self.path = os.path.join(workdir, METRICS_FILE)
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if resume_step is not None and os.path.exists(self.path):
      kept = [r for r in read_metrics(workdir) if r["step"] <= resume_step]
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        for r in kept:
          f.write(json.dumps(r) + "\n")
      os.replace(tmp, self.path)
    elif resume_step is None and os.path.exists(self.path):
      os.remove(self.path)  # A fresh run: no stale records.
    from tensorboardX import SummaryWriter  # Imported lazily: it is slow to import.

    purge = None if resume_step is None else resume_step + 1
    self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR), purge_step=purge)

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> dict:
    """Writes one record; returns it."""
    record = {"step": int(step), "split": split}
    record.update({k: _jsonable(v) for k, v in metrics.items()})
    if not self.enabled:
      return record
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for key, value in metrics.items():
      if isinstance(value, int | float | np.number) and math.isfinite(float(value)):
        self._tb.add_scalar(f"{split}/{key}", float(value), int(step))
    self._tb.flush()
    return record

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def write_config(workdir: str, config) -> str:
  """Writes the resolved config as ``config.json``; returns its path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path, "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
  return path


def read_config(workdir: str) -> dict | None:
  """The ``config.json`` of ``workdir`` as a dict, or ``None`` if there is none."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _flatten(d: Mapping, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, Mapping):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def config_differences(stored: Mapping, config, ignore: Sequence[str] = ()) -> list[str]:
  """Fields (dotted names) where a stored ``config.json`` differs from ``config``.

  Only fields present in both are compared: a field added to (or removed from) the config schema
  since the run was made is a change of the code, not of the settings. Fields in ``ignore`` (and
  everything under a section named there) are left out.

  Returns:
    ``'field: old -> new'`` strings, sorted by field.
  """
  new = _flatten(json.loads(config.to_json_best_effort()))
  old = _flatten(stored)

  def ignored(key: str) -> bool:
    return any(key == i or key.startswith(i + ".") for i in ignore)

  keys = sorted(k for k in set(new) & set(old) if not ignored(k))
  return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in keys if old[k] != new[k]]


def _display_image(image: np.ndarray) -> tuple[np.ndarray, str | None]:
  """An image for ``imshow``: RGB for 3 channels, else the first channel in grey."""
  image = np.asarray(image, np.float32)
  if image.shape[-1] == 3:
    lo, hi = float(image.min()), float(image.max())
    scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return scaled, None
  return image[..., 0], "gray"


def _foreground_dice(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
  """Dice of the foreground (all classes > 0 together); 1 when both are empty."""
  valid = (truth >= 0) & (truth < num_classes)
  p, t = (pred > 0) & valid, (truth > 0) & valid
  den = p.sum() + t.sum()
  return 1.0 if den == 0 else float(2 * (p & t).sum() / den)


def save_predictions_png(
  path: str,
  images: np.ndarray,
  labels: np.ndarray,
  preds: np.ndarray,
  *,
  class_names: Sequence[str],
  title: str = "",
) -> str:
  """Draws ``len(images)`` rows of image | truth | prediction into a PNG file.

  Args:
    path: output file.
    images: ``(N, H, W, C)`` float images.
    labels: ``(N, H, W)`` true class maps.
    preds: ``(N, H, W)`` predicted class maps.
    class_names: one name per class (the colour bar of the label panels).
    title: figure title (e.g. the config and step).

  Returns:
    ``path``.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  n = len(images)
  num_classes = len(class_names)
  fig = Figure(figsize=(9, 2.8 * n + 0.6), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(n, 3, squeeze=False)
  cmap = "gray" if num_classes == 2 else "tab10"
  for i in range(n):
    shown, img_cmap = _display_image(images[i])
    axes[i, 0].imshow(shown, cmap=img_cmap)
    axes[i, 0].set_title(f"validation #{i}: image")
    mappable = axes[i, 1].imshow(
      labels[i], cmap=cmap, vmin=0, vmax=num_classes - 1, interpolation="nearest"
    )
    axes[i, 1].set_title("truth")
    axes[i, 2].imshow(preds[i], cmap=cmap, vmin=0, vmax=num_classes - 1, interpolation="nearest")
    dice = _foreground_dice(preds[i], labels[i], num_classes)
    axes[i, 2].set_title(f"prediction (foreground Dice {dice:.3f})")
    for ax in axes[i]:
      ax.set_xlabel("x (pixels)")
      ax.set_ylabel("y (pixels)")
    bar = fig.colorbar(mappable, ax=axes[i, 1:], ticks=range(num_classes), shrink=0.9)
    bar.ax.set_yticklabels(list(class_names))
    bar.set_label("class")
  if title:
    fig.suptitle(title)
  fig.savefig(path, dpi=80)
  return path


def echo(message: str, *, pbar=None) -> None:
  """Prints ``message`` on process 0 (through the progress bar when there is one)."""
  import jax

  if jax.process_index() != 0:
    return
  if pbar is not None and not pbar.disable:
    pbar.write(message)
  else:
    print(message, flush=True)


def summary(split: str, step: int, m: Mapping) -> str:
  """The console line of an evaluation."""
  keys = [k for k in ("dice_mean", "iou_mean", "precision_mean", "recall_mean", "hd95") if k in m]
  return f"step {step} {split}: " + ", ".join(f"{k}={m[k]:.4f}" for k in keys)
