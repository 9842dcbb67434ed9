r"""Times every seg_jax loss next to optax's equivalents and the floor of one ``exp`` per logit.

Usage::

  python benchmarks/losses.py            # full run: (8,256,256,4) and (2,64,64,64,3); writes
                                         # benchmarks/results/losses.json and BENCHMARKS.md
  python benchmarks/losses.py --quick    # tiny shapes, a smoke test; writes only --json if given

Method: every function is ``jax.jit``-compiled and warmed up, then the rows of one shape are timed
round-robin (in each round, each row is called once untimed and then once timed, with
``block_until_ready``), ``--repeats`` rounds, and the median is reported; interleaving keeps the
ratios fair when the machine's load changes, and the untimed call keeps a light row that follows a
heavy one from paying for its neighbour. The forward column times the loss value; the grad column
``jax.value_and_grad`` w.r.t. the logits.

Comparisons (the same inputs, the same reduction to a scalar):

* ``floor``: ``sum(exp(logits))``, one ``exp`` per logit and one reduction;
* optax ``softmax_cross_entropy_with_integer_labels`` vs ``cross_entropy``;
  ``sigmoid_binary_cross_entropy`` vs ``binary_cross_entropy`` (multilabel, dense 0/1 labels);
  ``sigmoid_focal_loss`` vs ``focal`` (multilabel, dense labels); ``dice_loss`` (softmax, one-hot
  labels built inside the timed function, as ours builds them) vs ``dice`` (multiclass).

Targets (from the losses issue): CE, BCE, sigmoid focal and dice >= 2x faster than optax's; CE,
BCE, focal, the dice family and tversky within 4x of the exp floor; lovasz O(N log N), checked
by timing it at growing sizes. Boundary and Hausdorff losses report the distance transform alone
on their own line. The ``(checked)`` rows time ``losses.checked(loss)`` for a few losses, next to
the plain loss (the cost of the value checks).
"""

from __future__ import annotations

import argparse
import math
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from seg_jax import losses
from seg_jax.data.targets import tubed_skeleton
from seg_jax.machine import machine_info, save_results, write_section

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "losses.json"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"

FULL_SHAPES = ((8, 256, 256, 4), (2, 64, 64, 64, 3))
# Quick mode (a smoke test): every row at a tiny 2D shape, a few rows at a tiny 3D shape.
QUICK_SHAPES = ((2, 8, 8, 3), (1, 4, 4, 4, 3))
QUICK_3D_ROWS = ("cross_entropy",)
LOVASZ_SIZES = (64, 128, 256)  # Square side at batch 8, 4 classes (N = 8 s^2 pixels).
QUICK_LOVASZ_SIZES = (4, 8)

# The losses issue's speed targets.
OPTAX_SPEEDUP = 2.0
FLOOR_RATIO = 4.0
FLOOR_TARGETS = (
  "cross_entropy",
  "binary_cross_entropy",
  "focal",
  "focal (sigmoid)",
  "dice",
  "log_cosh_dice",
  "generalized_dice",
  "jaccard",
  "tversky",
  "focal_tversky",
)

# How each registry loss is called when its defaults do not fit integer multiclass labels.
# ``dense``: dense one-hot labels of logits' shape instead of an integer class map.
CALLS = {
  "binary_cross_entropy": {"dense": True, "options": {"mode": "multilabel"}},
}
# Extra rows: (row name, registry name, call) compared with an optax function.
EXTRA_ROWS = (("focal (sigmoid)", "focal", {"dense": True, "options": {"mode": "multilabel"}}),)
# Row compared with each optax function.
OPTAX_PAIRS = {
  "cross_entropy": "optax softmax_cross_entropy_with_integer_labels",
  "binary_cross_entropy": "optax sigmoid_binary_cross_entropy",
  "focal (sigmoid)": "optax sigmoid_focal_loss",
  "dice": "optax dice_loss",
}
DISTANCE_LOSSES = ("boundary", "hausdorff_dt")
# Losses also timed as ``losses.checked(...)`` (value checks of the inputs, raising from jit):
# rows "<name> (checked)", with their cost relative to the plain loss.
CHECKED_ROWS = ("cross_entropy", "dice", "dice_ce", "lovasz")
CHECKED_SUFFIX = " (checked)"
SKELETON_ROW = "skeleton_recall (precomputed skeleton)"


def make_inputs(shape, seed=0):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(2.0 * rng.standard_normal(shape), jnp.float32)
  labels = jnp.asarray(rng.integers(0, shape[-1], size=shape[:-1]), jnp.int32)
  dense = jax.nn.one_hot(labels, shape[-1], dtype=jnp.float32)
  return logits, labels, dense


def _scalar(fn):
  """``fn`` returning a scalar float32 (the optax functions return per-pixel values)."""
  return lambda *a: jnp.mean(fn(*a))


def build_rows(shape, *, with_grad: bool, only=None):
  """Rows ``{name, group, fwd, grad, args}`` for one shape; jitted, not yet compiled."""
  logits, labels, dense = make_inputs(shape)
  c = shape[-1]
  rows = []

  def add(name, group, fn, args, grad=True):
    if only is not None and group != "reference":
      paired = any(OPTAX_PAIRS.get(n) == name for n in only)
      base = name.removesuffix(CHECKED_SUFFIX)
      if name not in only and base not in only and not paired and group != "distance":
        return
    row = {"name": name, "group": group, "fwd": jax.jit(fn), "args": args}
    if with_grad and grad:
      row["grad"] = jax.jit(jax.value_and_grad(fn))
    rows.append(row)

  add("floor: sum(exp(logits))", "reference", lambda x: jnp.sum(jnp.exp(x)), (logits,))
  add(
    "optax softmax_cross_entropy_with_integer_labels",
    "optax",
    lambda x, y: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x, y)),
    (logits, labels),
  )
  add(
    "optax sigmoid_binary_cross_entropy",
    "optax",
    lambda x, y: jnp.mean(optax.sigmoid_binary_cross_entropy(x, y)),
    (logits, dense),
  )
  add(
    "optax sigmoid_focal_loss",
    "optax",
    lambda x, y: jnp.mean(optax.sigmoid_focal_loss(x, y, gamma=2.0)),
    (logits, dense),
  )
  add(
    "optax dice_loss",
    "optax",
    lambda x, y: jnp.mean(optax.losses.dice_loss(x, jax.nn.one_hot(y, c), smooth=1e-5)),
    (logits, labels),
  )

  calls = [(name, name, CALLS.get(name, {})) for name in losses.names()]
  calls += [row for row in EXTRA_ROWS if row[1] in losses.names()]
  for row_name, reg_name, call in sorted(calls):
    fn = losses.get(reg_name, **call.get("options", {}))
    y = dense if call.get("dense") else labels
    add(row_name, "seg_jax", lambda x, y, fn=fn: fn(x, y), (logits, y))
    if row_name in CHECKED_ROWS:
      checked = losses.checked(fn)
      add(row_name + CHECKED_SUFFIX, "checked", lambda x, y, f=checked: f(x, y), (logits, y))
  # Skeleton Recall as the paper trains it: the tubed skeleton made once on the host (the data
  # pipeline's seg_jax.data.targets), only the loss timed; the registry row above builds the
  # in-jit tube.
  if only is None or SKELETON_ROW in only or "skeleton_recall" in only:
    host = np.asarray(labels)
    skel = jnp.asarray(np.stack([tubed_skeleton(y, num_classes=c) for y in host]))
    add(
      SKELETON_ROW,
      "seg_jax",
      lambda x, y, s: losses.skeleton_recall_loss(x, y, skeleton=s),
      (logits, labels, skel),
    )

  add_distance_rows(add, logits, labels, only)
  return rows


def add_distance_rows(add, logits, labels, only):
  """The distance-transform work of boundary/hausdorff_dt on its own, and the losses without it.

  Both losses supervise the foreground channels by default (multiclass, include_background
  False): boundary needs the signed distance map of each ground-truth class, hausdorff_dt the
  unsigned boundary distance maps of the ground truth and of the thresholded prediction.
  """
  from seg_jax.losses.distance import boundary_distance_map, signed_distance_map

  c = logits.shape[-1]
  if only is not None and not any(n in only for n in DISTANCE_LOSSES):
    return

  def onehot_fg(y):
    return jax.nn.one_hot(y, c, dtype=jnp.float32)[..., 1:]

  if "boundary" in losses.names():
    add(
      "boundary: distance transform alone (signed_distance_map)",
      "distance",
      lambda y: jnp.sum(signed_distance_map(onehot_fg(y))),
      (labels,),
      grad=False,
    )
    maps = jnp.concatenate(
      [jnp.zeros(labels.shape + (1,)), signed_distance_map(onehot_fg(labels))], axis=-1
    )
    fn = losses.get("boundary")
    add(
      "boundary: loss with precomputed distance_maps",
      "distance",
      lambda x, y, d: fn(x, y, distance_maps=d),
      (logits, labels, maps),
    )
  if "hausdorff_dt" in losses.names():

    def hd_maps(x, y):
      pred = jax.nn.softmax(x)[..., 1:] > 0.5
      both = jnp.concatenate([onehot_fg(y) > 0.5, pred])
      return jnp.sum(boundary_distance_map(both))

    add(
      "hausdorff_dt: distance transforms alone (labels + prediction)",
      "distance",
      hd_maps,
      (logits, labels),
      grad=False,
    )


def time_rows(rows, repeats: int) -> None:
  """Compiles and warms every row, then times them round-robin; fills ``ms``/``grad_ms``."""
  keys = []
  for row in rows:
    for key in ("fwd", "grad"):
      if key not in row:
        continue
      fn = row[key]
      t0 = time.perf_counter()
      try:
        compiled = fn.lower(*row["args"]).compile()
        jax.block_until_ready(compiled(*row["args"]))
      except Exception as e:  # noqa: BLE001 -- a loss still being written must not stop the run.
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        break
      row[f"{key}_compile_s"] = time.perf_counter() - t0
      row[f"{key}_compiled"] = compiled
      row[f"{key}_times"] = []
      keys.append((row, key))
  for _ in range(repeats):
    for row, key in keys:
      compiled = row[f"{key}_compiled"]
      # One untimed call first: right after a heavy row (lovasz, cldice, the distance losses)
      # the first call of a light one is up to 1.5x slower (measured on the 2-core CPU), which
      # would charge the row for its place in the round rather than for its own cost.
      jax.block_until_ready(compiled(*row["args"]))
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(*row["args"]))
      row[f"{key}_times"].append(time.perf_counter() - t0)
  for row, key in keys:
    times = row.pop(f"{key}_times")
    row[f"{key}_ms"] = 1e3 * statistics.median(times)
    row[f"{key}_min_ms"] = 1e3 * min(times)
    del row[f"{key}_compiled"]


def summarize(rows) -> list[dict]:
  """JSON-able rows with ratios vs the floor and vs optax, and target checks.

  Ratios are given from the medians (``vs_floor``, ``speedup_vs_optax``; the targets are judged on
  these) and from the minima (``*_min``: the least disturbed calls, a better estimate when the
  machine is shared).
  """
  by_name = {r["name"]: r for r in rows}
  floor = by_name.get("floor: sum(exp(logits))", {})
  out = []
  for r in rows:
    s = {k: v for k, v in r.items() if k not in ("fwd", "grad", "args")}
    if "fwd_ms" in r and "fwd_ms" in floor:
      s["vs_floor"] = r["fwd_ms"] / floor["fwd_ms"]
      s["vs_floor_min"] = r["fwd_min_ms"] / floor["fwd_min_ms"]
    opt = OPTAX_PAIRS.get(r["name"])
    if opt and "fwd_ms" in r and "fwd_ms" in by_name.get(opt, {}):
      s["optax"] = opt
      s["speedup_vs_optax"] = by_name[opt]["fwd_ms"] / r["fwd_ms"]
      s["speedup_vs_optax_min"] = by_name[opt]["fwd_min_ms"] / r["fwd_min_ms"]
      if "grad_ms" in r and "grad_ms" in by_name[opt]:
        s["grad_speedup_vs_optax"] = by_name[opt]["grad_ms"] / r["grad_ms"]
    plain = by_name.get(r["name"].removesuffix(CHECKED_SUFFIX), {})
    if r["group"] == "checked" and "fwd_ms" in r and "fwd_ms" in plain:
      s["vs_unchecked"] = r["fwd_ms"] / plain["fwd_ms"]
      if "grad_ms" in r and "grad_ms" in plain:
        s["grad_vs_unchecked"] = r["grad_ms"] / plain["grad_ms"]
    targets = []
    if opt and "speedup_vs_optax" in s:
      targets.append(
        {
          "target": f">= {OPTAX_SPEEDUP:g}x faster than optax",
          "value": s["speedup_vs_optax"],
          "value_min": s["speedup_vs_optax_min"],
          "met": s["speedup_vs_optax"] >= OPTAX_SPEEDUP,
        }
      )
    if r["name"] in FLOOR_TARGETS and "vs_floor" in s:
      targets.append(
        {
          "target": f"<= {FLOOR_RATIO:g}x the exp floor",
          "value": s["vs_floor"],
          "value_min": s["vs_floor_min"],
          "met": s["vs_floor"] <= FLOOR_RATIO,
        }
      )
    if targets:
      s["targets"] = targets
    out.append(s)
  return out


def lovasz_scaling(sizes, repeats: int) -> dict | None:
  """Times lovasz at growing N; O(N log N) gives a constant t / (N log2 N)."""
  if "lovasz" not in losses.names():
    return None
  fn = losses.get("lovasz")
  rows = []
  for s in sizes:
    logits, labels, _ = make_inputs((8, s, s, 4), seed=s)
    rows.append({"name": f"lovasz (8,{s},{s},4)", "fwd": jax.jit(fn), "args": (logits, labels)})
  time_rows(rows, repeats)
  points = []
  for s, r in zip(sizes, rows, strict=True):
    if "fwd_ms" not in r:
      return {"error": r.get("error")}
    n = 8 * s * s
    points.append(
      {"N": n, "ms": r["fwd_ms"], "ms_per_NlogN_ns": 1e6 * r["fwd_ms"] / (n * math.log2(n))}
    )
  # Exponent k of t ~ N^k between the two largest sizes (N log N gives k slightly above 1).
  (n1, t1), (n2, t2) = [(p["N"], p["ms"]) for p in points[-2:]]
  k = math.log(t2 / t1) / math.log(n2 / n1)
  nlogn = math.log((n2 * math.log2(n2)) / (n1 * math.log2(n1))) / math.log(n2 / n1)
  return {
    "points": points,
    "exponent": k,
    "nlogn_exponent": nlogn,
    # Generous: timing noise on a shared machine; quadratic would give k ~ 2.
    "met": k <= nlogn + 0.35,
  }


def shape_str(shape) -> str:
  return "(" + ",".join(map(str, shape)) + ")"


def fmt(x, spec=".2f", suffix=""):
  return "" if x is None else f"{x:{spec}}{suffix}"


def table_lines(shape, rows, *, markdown: bool) -> list[str]:
  head = [
    "loss",
    "fwd ms (median)",
    "fwd ms (min)",
    "fwd+grad ms (median)",
    "vs optax",
    "vs exp floor",
    "checked vs plain (fwd; fwd+grad)",
    "targets (median; min in brackets)",
  ]
  lines = []
  body = []
  for r in rows:
    if "error" in r:
      body.append([r["name"], "error", "", "", "", "", "", r["error"][:60]])
      continue
    tgt = "; ".join(
      f"{'met' if t['met'] else 'MISSED'} {t['target']}: {t['value']:.2f}x ({t['value_min']:.2f}x)"
      for t in r.get("targets", [])
    )
    body.append(
      [
        r["name"],
        fmt(r.get("fwd_ms")),
        fmt(r.get("fwd_min_ms")),
        fmt(r.get("grad_ms")),
        fmt(r.get("speedup_vs_optax"), ".2f", "x faster") if "speedup_vs_optax" in r else "",
        fmt(r.get("vs_floor"), ".2f", "x"),
        "; ".join(
          fmt(r.get(k), ".2f", "x") for k in ("vs_unchecked", "grad_vs_unchecked") if k in r
        ),
        tgt,
      ]
    )
  if markdown:
    lines.append(f"Shape `{shape_str(shape)}`:")
    lines.append("")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * 6 + ["---"]) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in body]
    lines.append("")
  else:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    widths[-1] = 0
    lines.append(f"== shape {shape_str(shape)} ==")
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in body]
  return lines


def lovasz_lines(scaling, *, markdown: bool) -> list[str]:
  if scaling is None:
    return []
  if "error" in scaling:
    return [f"lovasz scaling: error {scaling['error']}"]
  pts = ", ".join(
    f"N={p['N']}: {p['ms']:.1f} ms ({p['ms_per_NlogN_ns']:.2f} ns/(N log2 N))"
    for p in scaling["points"]
  )
  verdict = "met" if scaling["met"] else "MISSED"
  line = (
    f"lovasz scaling: {pts}; time ~ N^{scaling['exponent']:.2f} between the two largest sizes "
    f"(N log N would be N^{scaling['nlogn_exponent']:.2f}): O(N log N) target {verdict}."
  )
  return [line, ""] if markdown else [line]


def write_markdown(path: pathlib.Path, result: dict) -> None:
  """Replaces (or adds) the '## Losses' section of BENCHMARKS.md, keeping other sections."""
  m = result["machine"]
  section = [
    "## Losses",
    "",
    "Written by `python benchmarks/losses.py` (raw numbers: `benchmarks/results/losses.json`).",
    f"Machine: {m['cpu']}, {m['cores']} cores, {m['backend']} backend; jax {m['jax']}, optax "
    f"{m['optax']}, Python {m['python']}; {m['date']} (1-min load average at start "
    f"{m['loadavg_1min_at_start']}).",
    "",
    f"Median (and minimum) of {result['repeats']} round-robin timed calls after compile and "
    "warm-up (each timed call preceded by an untimed one of the same row), each a jitted scalar "
    "loss (`mean` reduction, default options, integer class maps) "
    "on random logits; `binary_cross_entropy` and `focal (sigmoid)` take multilabel one-hot "
    "labels, as their optax counterparts. 'vs optax' is optax's time divided by ours on the same "
    "inputs; 'vs exp floor' is ours divided by `sum(exp(logits))`. The 'boundary:' and "
    "'hausdorff_dt:' rows split those losses into their distance transforms (computed inside the "
    "loss by default) and the loss with precomputed maps. '(checked)' rows time "
    "`losses.checked(loss)` (input value checks raising from jit); 'checked vs plain' is their "
    "time divided by the plain loss's.",
    "",
    "Targets (losses issue): CE, BCE, sigmoid focal, dice >= 2x faster than optax; CE, BCE, "
    "focal, the dice family and tversky <= 4x the exp floor; lovasz O(N log N). Judged on the "
    "medians; the ratio of the minima is in brackets. On a shared machine (see the load "
    "average) the minimum is the better estimate of the undisturbed cost.",
    "",
  ]
  for entry in result["shapes"]:
    section += table_lines(entry["shape"], entry["rows"], markdown=True)
  section += lovasz_lines(result.get("lovasz_scaling"), markdown=True)
  write_section(path, section)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="tiny shapes, few repeats (smoke test)")
  p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 20; quick 2)")
  p.add_argument("--no-grad", action="store_true", help="skip the value_and_grad column")
  p.add_argument(
    "--json",
    type=pathlib.Path,
    default=None,
    help=f"JSON output (default {RESULTS.relative_to(ROOT)}; quick: none)",
  )
  p.add_argument(
    "--markdown",
    type=pathlib.Path,
    default=None,
    help="BENCHMARKS.md to update (default: the repo's; quick: none)",
  )
  p.add_argument("--only", nargs="*", default=None, help="row names to time (references always)")
  args = p.parse_args(argv)

  shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
  repeats = args.repeats or (1 if args.quick else 20)
  with_grad = not args.no_grad and not args.quick
  json_path = args.json if args.json or args.quick else RESULTS
  md_path = args.markdown if args.markdown or args.quick else BENCHMARKS_MD

  result = {"machine": machine_info(), "repeats": repeats, "shapes": []}
  print(
    f"seg_jax loss benchmark on {result['machine']['cpu']} ({result['machine']['cores']} cores, "
    f"jax {jax.__version__}, load {result['machine']['loadavg_1min_at_start']})",
    flush=True,
  )
  for shape in shapes:
    only = args.only
    if args.quick and len(shape) == 5:
      only = QUICK_3D_ROWS if only is None else [n for n in only if n in QUICK_3D_ROWS]
    rows = build_rows(shape, with_grad=with_grad, only=only)
    time_rows(rows, repeats)
    summary = summarize(rows)
    result["shapes"].append({"shape": list(shape), "rows": summary})
    print("\n".join(table_lines(shape, summary, markdown=False)), flush=True)
  result["lovasz_scaling"] = lovasz_scaling(
    QUICK_LOVASZ_SIZES if args.quick else LOVASZ_SIZES, repeats
  )
  for line in lovasz_lines(result["lovasz_scaling"], markdown=False):
    print(line)

  save_results(result, json_path, md_path, write_markdown)
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
