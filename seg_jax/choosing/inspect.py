r"""Statistics of a segmentation data set's labels, and the losses worth comparing on it.

The command line is :mod:`seg_jax.inspect` (``python -m seg_jax.inspect --config=...``). It
reads the split as the training pipeline yields it (``seg_jax.data.load(config.data)``,
decoded and resized to ``config.data.image_size``, *no augmentation*), prints statistics of the
labels, the losses to try with the reason for each (the rules of :mod:`seg_jax.choosing.recommend`,
documented in ``docs/choosing.md``), and the ``python -m seg_jax.compare`` command that tests
them. ``--json`` prints the same as one JSON object instead.

Statistics (ignored pixels, ``ignore_index``, are left out of every count; class 0 is the
background, the other classes are foreground):

* ``pixel_fraction`` of class :math:`c`: :math:`n_c / \sum_k n_k` over all inspected images.
* ``foreground_fraction``: per image, foreground pixels / non-ignored pixels (an image with no
  non-ignored pixel counts as 0); its mean, quantiles and a histogram with bins
  ``empty (= 0), (0, 1 %], (1, 5 %], (5, 10 %], (10, 25 %], (25, 50 %], (50, 100 %]``.
* ``empty_fraction``: share of images without foreground; ``absent_fraction`` per class: share of
  images without a pixel of that class.
* Objects (foreground classes): connected components of each class mask with 8-connectivity
  (in 2D; full connectivity in any dimension, ``scipy.ndimage.label``), so diagonal steps of a
  thin curve do not break it. Per class: components per image (mean over all images, maximum),
  component sizes in pixels and as a fraction of the image area (quantiles over all components).
* Thinness, from the Euclidean distance transform :math:`d(x)` of the class mask (distance from
  a class pixel to the nearest pixel not of the class, the image border counting as not of the
  class): for a component :math:`K`, its width :math:`w_K = 2 \max_{x \in K} d(x) - 1` (the
  diameter of the largest inscribed disc between pixel centres: exact for bands of odd width, one
  less for even widths) and its elongation :math:`e_K = |K| / w_K^2` (about length / width for a
  band; at most about 1 for discs and squares). A component is *thin* when
  :math:`w_K \le` ``THIN_MAX_WIDTH_PX`` and :math:`e_K \ge` ``THIN_MIN_ELONGATION``.
  ``thin_fraction`` of a class is the share of its pixels in thin components.
* ``boundary_fraction`` of a class: the share of its pixels with
  :math:`d(x) \le` ``BOUNDARY_BAND_PX`` (within 2 px of the class boundary).

Quantiles are NumPy's default (linear interpolation): ``min, p5, p25, median, p75, p95, max``;
``None`` where there is nothing to summarise (e.g. a class with no pixel).

Example::

  from seg_jax import data
  from seg_jax.choosing.inspect import inspect_dataset, report
  cfg = data.default_config()
  result = report(inspect_dataset(data.load(cfg), 'train', max_examples=200),
                  config_path='configs/default.py')
  print(result['text'])
"""

from __future__ import annotations

import math
import shlex
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from seg_jax.choosing.recommend import (
  BOUNDARY_BAND_PX,
  THIN_MAX_WIDTH_PX,
  THIN_MIN_ELONGATION,
  losses_to_try,
  recommend,
)

QUANTILES = {
  "min": 0.0,
  "p5": 0.05,
  "p25": 0.25,
  "median": 0.5,
  "p75": 0.75,
  "p95": 0.95,
  "max": 1.0,
}
# Foreground-fraction histogram: the first bin holds exactly 0 (empty images), then (lo, hi].
HISTOGRAM_EDGES = (0.0, 0.01, 0.05, 0.10, 0.25, 0.50, 1.0)


def quantiles(values: Iterable[float]) -> dict[str, float | None]:
  """``{'min', 'p5', 'p25', 'median', 'p75', 'p95', 'max'}`` of ``values`` (``None`` if empty)."""
  v = np.asarray(list(values), np.float64)
  if v.size == 0:
    return dict.fromkeys(QUANTILES)
  q = np.quantile(v, list(QUANTILES.values()))
  return {k: float(x) for k, x in zip(QUANTILES, q, strict=True)}


def histogram(fractions: Sequence[float]) -> list[dict[str, Any]]:
  """Counts of ``fractions`` in the bins of ``HISTOGRAM_EDGES`` (``bin, low, high, count``)."""
  f = np.asarray(fractions, np.float64)
  bins = [{"bin": "empty", "low": 0.0, "high": 0.0, "count": int(np.sum(f == 0.0))}]
  for lo, hi in zip(HISTOGRAM_EDGES[:-1], HISTOGRAM_EDGES[1:], strict=True):
    label = f"({100 * lo:g}, {100 * hi:g} %]"
    bins.append({"bin": label, "low": lo, "high": hi, "count": int(np.sum((f > lo) & (f <= hi)))})
  return bins


class _ClassObjects:
  """Per foreground class: component sizes, widths, and thin / boundary pixel counts."""

  def __init__(self):
    self.sizes: list[np.ndarray] = []
    self.counts: list[int] = []
    self.pixels = 0
    self.thin_pixels = 0
    self.boundary_pixels = 0

  def add(self, mask: np.ndarray) -> None:
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    labeled, n = ndimage.label(mask, structure=structure)
    self.counts.append(int(n))
    if n == 0:
      self.sizes.append(np.zeros(0, np.int64))
      return
    # Pad with "not the class" so that the image border counts as a boundary.
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[(slice(1, -1),) * mask.ndim]
    sizes = np.bincount(labeled.ravel(), minlength=n + 1)[1:]
    max_dist = np.asarray(ndimage.maximum(dist, labeled, np.arange(1, n + 1)), np.float64)
    widths = 2.0 * max_dist - 1.0
    thin = (widths <= THIN_MAX_WIDTH_PX) & (sizes / widths**2 >= THIN_MIN_ELONGATION)
    self.sizes.append(sizes)
    self.pixels += int(sizes.sum())
    self.thin_pixels += int(sizes[thin].sum())
    self.boundary_pixels += int(np.sum(dist[mask] <= BOUNDARY_BAND_PX))


def label_statistics(
  labels: Iterable[np.ndarray],
  *,
  num_classes: int,
  class_names: Sequence[str] | None = None,
  ignore_index: int | None = None,
) -> dict[str, Any]:
  """Statistics of integer class maps (see the module docstring for every definition).

  Args:
    labels: class maps, each ``(*spatial)`` integer array with values in ``[0, num_classes)``
      or ``ignore_index``; images may differ in size.
    num_classes: number of classes, background (0) included (>= 2).
    class_names: one name per class (default ``class_0, class_1, ...``).
    ignore_index: label value of ignored pixels, or ``None``.

  Returns:
    A JSON-serialisable dict: ``num_images``, ``ignored_fraction``, ``foreground_fraction``
    (``mean``, ``quantiles``, ``histogram``), ``empty_fraction``, and ``classes``: a list with,
    per class, ``index``, ``name``, ``pixel_fraction``, ``absent_fraction`` and, for foreground
    classes, ``components_per_image`` (``mean``, ``max``), ``num_components``,
    ``component_size_px`` and ``component_size_fraction`` (quantiles), ``thin_fraction``,
    ``boundary_fraction``.

  Raises:
    ValueError: no images, a bad ``num_classes`` or ``class_names``, a label map that is not
      integer or holds values outside the classes (the message names the image index).
  """
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
    raise ValueError(f"label_statistics: num_classes must be an int >= 2, got {num_classes!r}.")
  names = (
    tuple(class_names)
    if class_names is not None
    else tuple(f"class_{i}" for i in range(num_classes))
  )
  if len(names) != num_classes:
    raise ValueError(
      f"label_statistics: {len(names)} class_names {names} for num_classes={num_classes}."
    )
  pixels = np.zeros(num_classes, np.int64)
  present = np.zeros(num_classes, np.int64)
  ignored = total = 0
  fg_fraction: list[float] = []
  objects = {c: _ClassObjects() for c in range(1, num_classes)}
  image_pixels: list[int] = []
  for i, label in enumerate(labels):
    label = np.asarray(label)
    if not np.issubdtype(label.dtype, np.integer):
      raise ValueError(f"label_statistics: image {i}: labels must be integers, got {label.dtype}.")
    valid = np.ones(label.shape, bool) if ignore_index is None else label != ignore_index
    bad = valid & ((label < 0) | (label >= num_classes))
    if bad.any():
      raise ValueError(
        f"label_statistics: image {i}: values {np.unique(label[bad])[:10].tolist()} outside "
        f"[0, {num_classes}) (ignore_index={ignore_index})."
      )
    counts = np.bincount(label[valid].ravel(), minlength=num_classes)
    pixels += counts
    present += counts > 0
    ignored += int(label.size - valid.sum())
    total += int(label.size)
    image_pixels.append(int(label.size))
    kept = int(counts.sum())
    fg_fraction.append(float(counts[1:].sum() / kept) if kept else 0.0)
    for c, acc in objects.items():
      acc.add(valid & (label == c))
  n = len(fg_fraction)
  if n == 0:
    raise ValueError("label_statistics: no images to inspect.")
  kept_total = int(pixels.sum())
  classes = []
  for c in range(num_classes):
    entry: dict[str, Any] = {
      "index": c,
      "name": names[c],
      "pixel_fraction": float(pixels[c] / kept_total) if kept_total else 0.0,
      "absent_fraction": float(1.0 - present[c] / n),
    }
    if c:
      acc = objects[c]
      sizes = np.concatenate(acc.sizes)
      # Sizes relative to the area of the image each component is in.
      areas = np.concatenate(
        [np.full(len(s), a) for s, a in zip(acc.sizes, image_pixels, strict=True)]
      )
      entry.update(
        components_per_image={"mean": float(np.mean(acc.counts)), "max": int(max(acc.counts))},
        num_components=int(sizes.size),
        component_size_px=quantiles(sizes),
        component_size_fraction=quantiles(sizes / areas if sizes.size else []),
        thin_fraction=acc.thin_pixels / acc.pixels if acc.pixels else None,
        boundary_fraction=acc.boundary_pixels / acc.pixels if acc.pixels else None,
      )
    classes.append(entry)
  fg = np.asarray(fg_fraction)
  return {
    "num_images": n,
    "num_classes": num_classes,
    "ignored_fraction": ignored / total if total else 0.0,
    "foreground_fraction": {
      "mean": float(fg.mean()),
      "quantiles": quantiles(fg),
      "histogram": histogram(fg),
    },
    "empty_fraction": float(np.mean(fg == 0.0)),
    "classes": classes,
  }


def inspect_dataset(ds, split: str = "train", max_examples: int | None = None) -> dict[str, Any]:
  """:func:`label_statistics` of ``split`` of a :class:`seg_jax.data.SegDataset`.

  Reads examples ``0 .. max_examples - 1`` (all when ``None``) in the source's order with
  ``ds.example(split, i)``: decoded and resized to ``ds.spatial_shape``, not augmented.

  Returns:
    The statistics dict plus ``dataset``, ``split``, ``num_examples_total``,
    ``spatial_shape``, ``ignore_index``.
  """
  total = ds.num_examples(split)  # KeyError naming the valid splits.
  if max_examples is not None and (
    isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1
  ):
    raise ValueError(f"inspect: max_examples must be a positive int or None, got {max_examples!r}.")
  n = total if max_examples is None else min(total, max_examples)
  stats = label_statistics(
    (ds.example(split, i)["label"] for i in range(n)),
    num_classes=ds.num_classes,
    class_names=ds.class_names,
    ignore_index=ds.ignore_index,
  )
  return {
    "dataset": ds.name,
    "split": split,
    "num_examples_total": total,
    "spatial_shape": list(ds.spatial_shape),
    "ignore_index": ds.ignore_index,
    **stats,
  }


def compare_command(config_path: str, losses: Sequence[str], overrides: Sequence[str] = ()) -> str:
  """The ``python -m seg_jax.compare`` command that trains one model per loss in ``losses``.

  Args:
    config_path: the ``--config`` file given to inspect.
    losses: registry loss names.
    overrides: ``--config.data.*=value`` arguments to pass on unchanged.
  """
  args = ["python", "-m", "seg_jax.compare", f"--config={config_path}", *overrides]
  args.append("--losses=" + ",".join(losses))
  return shlex.join(args)


def data_overrides(argv: Sequence[str]) -> list[str]:
  """The ``--config.data.*`` arguments of ``argv`` as ``--key=value`` strings.

  Both ``--config.data.x=v`` and ``--config.data.x v`` (absl's two forms) are recognised.
  """
  out = []
  args = list(argv)
  for i, arg in enumerate(args):
    if not arg.startswith("--config.data."):
      continue
    if "=" in arg:
      out.append(arg)
    elif i + 1 < len(args) and not args[i + 1].startswith("--"):
      out.append(f"{arg}={args[i + 1]}")
    else:  # A boolean flag given bare.
      out.append(arg)
  return out


def _fmt_pct(x: float | None) -> str:
  return "-" if x is None else f"{100.0 * x:.2f} %"


def _fmt_num(x: float | None) -> str:
  if x is None:
    return "-"
  return f"{x:.0f}" if float(x).is_integer() or abs(x) >= 100 else f"{x:.1f}"


def format_text(stats: Mapping[str, Any], advice, command: str) -> str:
  """The human-readable report (plain aligned text)."""
  lines = []
  shape = "x".join(str(s) for s in stats.get("spatial_shape", []))
  lines.append(
    f"Data set {stats.get('dataset', '?')}, split {stats.get('split', '?')!r}: "
    f"{stats['num_images']} of {stats.get('num_examples_total', stats['num_images'])} examples"
    + (f", {shape}" if shape else "")
    + f", {stats['num_classes']} classes"
    + (
      f", ignore_index {stats['ignore_index']} ({_fmt_pct(stats['ignored_fraction'])} of pixels)"
      if stats.get("ignore_index") is not None
      else ""
    )
    + "."
  )
  width = max(12, *(len(c["name"]) for c in stats["classes"]))
  lines += ["", "Class frequencies", f"  {'class':<{width}}  {'pixels':>9}  {'absent from':>11}"]
  for c in stats["classes"]:
    lines.append(
      f"  {c['name']:<{width}}  {_fmt_pct(c['pixel_fraction']):>9}  "
      f"{_fmt_pct(c['absent_fraction']):>11}"
    )
  fg = stats["foreground_fraction"]
  q = fg["quantiles"]
  lines += [
    "",
    f"Foreground fraction per image (mean {_fmt_pct(fg['mean'])}; "
    f"empty images {_fmt_pct(stats['empty_fraction'])})",
    "  " + "  ".join(f"{k} {_fmt_pct(v)}" for k, v in q.items()),
  ]
  top = max(b["count"] for b in fg["histogram"]) or 1
  for b in fg["histogram"]:
    bar = "#" * math.ceil(40 * b["count"] / top) if b["count"] else ""
    lines.append(f"  {b['bin']:>14}  {b['count']:>6}  {bar}")
  lines += [
    "",
    "Objects (connected components, full connectivity) of the foreground classes",
    f"  {'class':<{width}}  {'per image':>9}  {'max':>4}  {'size px p5/median/p95':>22}  "
    f"{'% of image (median)':>19}  {'thin':>8}  {'boundary':>8}",
  ]
  for c in stats["classes"][1:]:
    px = c["component_size_px"]
    sizes = "/".join(_fmt_num(px[k]) for k in ("p5", "median", "p95"))
    lines.append(
      f"  {c['name']:<{width}}  {c['components_per_image']['mean']:>9.2f}  "
      f"{c['components_per_image']['max']:>4}  {sizes:>22}  "
      f"{_fmt_pct(c['component_size_fraction']['median']):>19}  "
      f"{_fmt_pct(c['thin_fraction']):>8}  {_fmt_pct(c['boundary_fraction']):>8}"
    )
  lines.append(
    f"  thin: share of pixels in components <= {THIN_MAX_WIDTH_PX:g} px wide and >= "
    f"{THIN_MIN_ELONGATION:g}x longer than wide; boundary: share within {BOUNDARY_BAND_PX:g} px "
    "of the class boundary."
  )
  lines += ["", "Recommendation (rules: seg_jax/choosing/recommend.py, docs/choosing.md)"]
  for a in advice:
    what = ", ".join(a.losses)
    if a.options:
      alternatives = " | ".join(", ".join(f"{k}={v}" for k, v in o.items()) for o in a.options)
      what = (what + "; " if what else "") + f"options {alternatives}"
    lines.append(f"  [{a.rule}] {what}")
    # No line break between a number and its unit ("10 %").
    wrapped = textwrap.wrap(
      a.reason.replace(" %", "\u00a0%") + ".", 96, initial_indent=" " * 6, subsequent_indent=" " * 6
    )
    lines += [line.replace("\u00a0", " ") for line in wrapped]
    cites = "; ".join(_short_cite(s) for s in a.sources)
    if cites:
      lines.append(f"      Sources: {cites}.")
  lines += ["", "Test them:", f"  {command}"]
  return "\n".join(lines)


def _short_cite(key: str) -> str:
  name, year = key.rstrip("0123456789"), key[-4:]
  return f"{name.capitalize()} {year}"


def report(
  stats: Mapping[str, Any],
  *,
  config_path: str = "configs/default.py",
  overrides: Sequence[str] = (),
) -> dict[str, Any]:
  """Statistics + recommendation + compare command.

  Returns:
    ``{'statistics': stats, 'recommendations': [advice dicts], 'losses': [names],
    'compare_command': str, 'text': the printed report}``.
  """
  advice = recommend(stats)
  names = losses_to_try(advice)
  command = compare_command(config_path, names, overrides)
  return {
    "statistics": dict(stats),
    "recommendations": [a.to_dict() for a in advice],
    "losses": names,
    "compare_command": command,
    "text": format_text(stats, advice, command),
  }
