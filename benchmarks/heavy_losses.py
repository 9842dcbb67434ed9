r"""Times the heavy losses against the goals of the speed issue, side by side in one process.

Usage::

  python benchmarks/heavy_losses.py --torch  # full run; writes benchmarks/results/
                                             # heavy_losses.json and its BENCHMARKS.md section
  python benchmarks/heavy_losses.py --quick  # tiny shapes, a smoke test (only --json if given)

Goals (issue "Speed where users feel it", section "Heavy losses"):

* ``lovasz`` at least as fast as segmentation_models_pytorch's ``LovaszLoss`` (Lovasz-Softmax,
  multiclass, pooled over the batch, the same logits and labels, torch CPU with as many threads
  as cores), forward and forward+gradient. ``--torch`` adds the smp rows (torch is a
  benchmark-only extra; seg_jax never imports it). The row ``lovasz (before)`` is the previous
  implementation (a two-operand ``lax.sort`` of the float keys with the index, then three
  gathers and two cumulative sums), kept here to measure the change in the same run.
* ``cldice``: forward+gradient within 3x of its forward.
* ``unified_focal`` and ``dice_focal``: forward+gradient within 2x of ``dice``'s. The row
  ``focal`` gives ``dice_focal``'s other term alone: the info line compares ``dice_focal`` with
  the sum of its two terms' times.
* ``focal_tversky`` at ``(2,64,64,64,3)``: its forward+gradient next to ``dice``'s and
  ``tversky``'s (the losses issue measured it 6x slower than theirs).

Method: every JAX function is jitted and warmed up; all rows of a shape (JAX and torch) are timed
round-robin, each timed call preceded by an untimed call of the same row (as in
``benchmarks/losses.py``), ``--repeats`` rounds; median and minimum are reported, and the ratios
are taken within the run (the machine is shared: the load average is recorded).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from seg_jax import losses
from seg_jax.losses import lovasz as lovasz_module
from seg_jax.losses._common import safe_divide
from seg_jax.machine import machine_info, save_results, write_section

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "heavy_losses.json"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Heavy losses"

# (shape, rows); a row is a registry loss name, "lovasz (before)" or "smp LovaszLoss".
FULL = (
  ((8, 64, 64, 4), ("lovasz", "lovasz (before)", "smp LovaszLoss")),
  (
    (8, 256, 256, 4),
    (
      "lovasz",
      "lovasz (before)",
      "smp LovaszLoss",
      "cldice",
      "dice",
      "focal",
      "dice_focal",
      "unified_focal",
    ),
  ),
  ((2, 64, 64, 64, 3), ("dice", "tversky", "focal_tversky", "cldice")),
)
QUICK = (
  ((2, 8, 8, 3), ("lovasz", "lovasz (before)", "smp LovaszLoss", "cldice", "dice")),
  ((1, 4, 4, 4, 3), ("dice", "focal_tversky")),
)
TORCH_ROWS = ("smp LovaszLoss",)


def _before_sorted_lovasz_gradient(errors, gt, kept):
  """The previous ``_sorted_lovasz_gradient``: float keys sorted with the index as an operand."""
  errors, gt, kept = (lax.stop_gradient(t) for t in (errors, gt, kept))
  axis = errors.ndim - 1
  key = jnp.where(kept > 0, -errors, jnp.inf)
  iota = lax.broadcasted_iota(jnp.int32, errors.shape, axis)
  _, perm = lax.sort((key, iota), dimension=axis, num_keys=1)
  k_sorted = jnp.take_along_axis(kept, perm, axis=axis)
  g_sorted = jnp.take_along_axis(gt * kept, perm, axis=axis)
  total = g_sorted.sum(axis, keepdims=True)
  intersection = total - jnp.cumsum(g_sorted, axis)
  union = total + jnp.cumsum((1.0 - g_sorted) * k_sorted, axis)
  jaccard = 1.0 - safe_divide(intersection, union)
  grad = jnp.diff(jaccard, axis=axis, prepend=jnp.zeros_like(jaccard[..., :1])) * k_sorted
  return perm, grad


def _lovasz_before(logits, labels):
  """``lovasz_loss`` with the previous sort (swapped in while tracing)."""
  shipped = lovasz_module._sorted_lovasz_gradient
  lovasz_module._sorted_lovasz_gradient = _before_sorted_lovasz_gradient
  try:
    return lovasz_module.lovasz_loss(logits, labels)
  finally:
    lovasz_module._sorted_lovasz_gradient = shipped


def _smp_lovasz():
  """smp's LovaszLoss class, imported without smp's package ``__init__`` (timm, hub...)."""
  import importlib
  import importlib.util
  import types

  if "segmentation_models_pytorch" not in sys.modules:
    spec = importlib.util.find_spec("segmentation_models_pytorch")
    if spec is None:
      raise ImportError("segmentation_models_pytorch is not installed (a benchmark-only extra)")
    package = types.ModuleType("segmentation_models_pytorch")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["segmentation_models_pytorch"] = package
  return importlib.import_module("segmentation_models_pytorch.losses.lovasz").LovaszLoss


def make_inputs(shape, seed=0):
  rng = np.random.default_rng(seed)
  logits = (2.0 * rng.standard_normal(shape)).astype(np.float32)
  labels = rng.integers(0, shape[-1], size=shape[:-1]).astype(np.int32)
  return logits, labels


def _jax_row(name, fn, logits, labels):
  x, y = jnp.asarray(logits), jnp.asarray(labels)
  fwd = jax.jit(fn)
  grad = jax.jit(jax.value_and_grad(fn))
  return {
    "name": name,
    "fwd": lambda: jax.block_until_ready(fwd(x, y)),
    "grad": lambda: jax.block_until_ready(grad(x, y)),
    "value": lambda: float(fwd(x, y)),
  }


def _torch_row(name, logits, labels):
  import torch

  loss = _smp_lovasz()("multiclass")
  x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(logits, -1, 1)))
  y = torch.from_numpy(labels.astype(np.int64))

  def fwd():
    with torch.no_grad():
      return loss(x, y)

  def grad():
    z = x.clone().requires_grad_(True)
    value = loss(z, y)
    value.backward()
    return value, z.grad

  return {"name": name, "fwd": fwd, "grad": grad, "value": lambda: float(fwd())}


def build_rows(shape, names, *, with_torch):
  logits, labels = make_inputs(shape)
  rows = []
  for name in names:
    if name in TORCH_ROWS:
      if with_torch:
        rows.append(_torch_row(name, logits, labels))
    elif name == "lovasz (before)":
      rows.append(_jax_row(name, _lovasz_before, logits, labels))
    else:
      rows.append(_jax_row(name, losses.get(name), logits, labels))
  return rows


def time_rows(rows, repeats):
  """Warms every row up (compiles), then times them round-robin; fills ms fields."""
  keys = []
  for row in rows:
    for key in ("fwd", "grad"):
      t0 = time.perf_counter()
      row[key]()
      row[f"{key}_first_s"] = time.perf_counter() - t0
      row[f"{key}_times"] = []
      keys.append((row, key))
    row["loss_value"] = row.pop("value")()
  for _ in range(repeats):
    for row, key in keys:
      row[key]()  # untimed: see benchmarks/losses.py
      t0 = time.perf_counter()
      row[key]()
      row[f"{key}_times"].append(time.perf_counter() - t0)
  for row, key in keys:
    times = row.pop(f"{key}_times")
    row[f"{key}_ms"] = 1e3 * statistics.median(times)
    row[f"{key}_min_ms"] = 1e3 * min(times)
    del row[key]


def goals(shape, rows):
  """The issue's goals that this shape's rows measure: ratio (median), of the minima, met."""
  r = {row["name"]: row for row in rows}
  out = []

  def ratio(a, ka, b, kb, target, what):
    if a in r and b in r:
      med = r[a][f"{ka}_ms"] / r[b][f"{kb}_ms"]
      low = r[a][f"{ka}_min_ms"] / r[b][f"{kb}_min_ms"]
      out.append({"goal": what, "value": med, "value_min": low, "met": med <= target})

  ratio("lovasz", "fwd", "smp LovaszLoss", "fwd", 1.0, "lovasz fwd / smp fwd <= 1")
  ratio("lovasz", "grad", "smp LovaszLoss", "grad", 1.0, "lovasz fwd+grad / smp fwd+grad <= 1")
  ratio("lovasz", "grad", "lovasz (before)", "grad", np.inf, "lovasz fwd+grad / before (info)")
  ratio("cldice", "grad", "cldice", "fwd", 3.0, "cldice fwd+grad / its fwd <= 3")
  ratio("unified_focal", "grad", "dice", "grad", 2.0, "unified_focal fwd+grad / dice's <= 2")
  ratio("dice_focal", "grad", "dice", "grad", 2.0, "dice_focal fwd+grad / dice's <= 2")
  if {"dice_focal", "dice", "focal"} <= r.keys():
    # dice_focal is dice + focal: the sum of its two terms' own times is its natural cost.
    parts, parts_min = (sum(r[k][f"grad{m}_ms"] for k in ("dice", "focal")) for m in ("", "_min"))
    out.append(
      {
        "goal": "dice_focal fwd+grad / (dice's + focal's) (info)",
        "value": r["dice_focal"]["grad_ms"] / parts,
        "value_min": r["dice_focal"]["grad_min_ms"] / parts_min,
        "met": None,
      }
    )
  if len(shape) == 5:
    ratio("focal_tversky", "grad", "dice", "grad", np.inf, "focal_tversky fwd+grad / dice's (info)")
    ratio("focal_tversky", "grad", "tversky", "grad", np.inf, "focal_tversky / tversky (info)")
  for g in out:
    if "(info)" in g["goal"]:
      g["met"] = None
  return out


def shape_str(shape):
  return "(" + ",".join(map(str, shape)) + ")"


def lines(result, *, markdown):
  out = []
  for entry in result["shapes"]:
    shape = entry["shape"]
    out.append(f"Shape `{shape_str(shape)}`:" if markdown else f"== {shape_str(shape)} ==")
    if markdown:
      out += ["", "| row | fwd ms (median, min) | fwd+grad ms (median, min) | loss value |"]
      out.append("|---|---:|---:|---:|")
    for row in entry["rows"]:
      cells = [
        row["name"],
        f"{row['fwd_ms']:.2f} ({row['fwd_min_ms']:.2f})",
        f"{row['grad_ms']:.2f} ({row['grad_min_ms']:.2f})",
        f"{row['loss_value']:.6f}",
      ]
      out.append("| " + " | ".join(cells) + " |" if markdown else "  ".join(cells))
    if markdown:
      out.append("")
    for g in entry["goals"]:
      verdict = "" if g["met"] is None else ("met: " if g["met"] else "MISSED: ")
      out.append(
        f"{'- ' if markdown else '  '}{verdict}{g['goal']}: {g['value']:.2f}x "
        f"(minima {g['value_min']:.2f}x)"
      )
    out.append("")
  return out


def write_markdown(path, result):
  m = result["machine"]
  torch = result.get("torch") or "not run"
  section = [
    SECTION,
    "",
    "Written by `python benchmarks/heavy_losses.py --torch` (raw numbers: "
    "`benchmarks/results/heavy_losses.json`).",
    f"Machine: {m['cpu']}, {m['cores']} cores, {m['backend']} backend; jax {m['jax']}, torch "
    f"{torch}; {m['date']} (1-min load average at start {m['loadavg_1min_at_start']}, at end "
    f"{result['loadavg_1min_at_end']}).",
    "",
    f"Median (minimum) of {result['repeats']} round-robin timed calls per row, each after an "
    "untimed call of the same row; JAX rows jitted, default options, integer class maps, "
    "random logits (scale 2); `smp LovaszLoss` is segmentation_models_pytorch's Lovasz-Softmax "
    "(`LovaszLoss('multiclass')`, channels-first copy of the same logits, torch CPU with "
    f"{result.get('torch_threads')} threads); 'fwd+grad' is the value and the gradient "
    "w.r.t. the logits (torch: forward and `backward()`). `lovasz (before)` is the previous "
    "sort (see the script). Ratios are of medians, within this run.",
    "",
  ]
  section += lines(result, markdown=True)
  write_section(path, section)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="tiny shapes, 1 round (smoke test)")
  p.add_argument("--torch", action="store_true", help="add the smp (torch CPU) rows")
  p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 10; quick 1)")
  p.add_argument("--json", type=pathlib.Path, default=None)
  p.add_argument("--markdown", type=pathlib.Path, default=None)
  args = p.parse_args(argv)
  plan = QUICK if args.quick else FULL
  repeats = args.repeats or (1 if args.quick else 10)
  json_path = args.json if args.json or args.quick else RESULTS
  md_path = args.markdown if args.markdown or args.quick else BENCHMARKS_MD

  result = {"machine": machine_info(), "repeats": repeats, "shapes": []}
  if args.torch:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    result["torch"] = torch.__version__
    result["torch_threads"] = torch.get_num_threads()
  for shape, names in plan:
    rows = build_rows(shape, names, with_torch=args.torch)
    time_rows(rows, repeats)
    entry = {"shape": list(shape), "rows": rows, "goals": goals(shape, rows)}
    result["shapes"].append(entry)
    print("\n".join(lines({"shapes": [entry]}, markdown=False)), flush=True)
  result["loadavg_1min_at_end"] = round(os.getloadavg()[0], 2)
  save_results(result, json_path, md_path, write_markdown)
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
