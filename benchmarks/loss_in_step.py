r"""The train step of the default U-Net with each registry loss, as a ratio to the step with
``cross_entropy``.

Usage::

  python benchmarks/loss_in_step.py          # every loss at the default config (16 features,
                                             # 4 levels, 64x64, batch 16); writes
                                             # benchmarks/results/loss_in_step.json and the
                                             # '## Losses inside the train step' section
  python benchmarks/loss_in_step.py --quick  # runlocal sizes (smoke test); writes only --json /
                                             # --markdown if given
  python benchmarks/loss_in_step.py --losses=dice,boundary   # a subset (cross_entropy always)

Method: for every loss of ``seg_jax.losses.names()``, its config file ``configs/<loss>.py`` (the
default config with that loss and its documented options), the trainer's own step
(:func:`seg_jax.train.make_train_step`: U-Net forward, the loss, backward, clipping, AdamW, on
the CPU devices the trainer would create) is compiled, on one fixed global batch of the config's
data. A loss with per-example targets (``losses.targets(name)``: skeletons, distance maps) gets
them in the batch, computed by the data pipeline as the trainer does (``train_batches(targets=
...)``, :func:`seg_jax.training.loop._loss_targets`), so the step does not compute them. After 2
warm-up steps each, ``--rounds`` rounds are timed; in each round the ``cross_entropy`` step runs
first and last and every other loss's step once in between, and the loss's ratio is its step time
over the mean of that round's two ``cross_entropy`` steps. The table gives the median ratio over
the rounds (a shared machine's load changes between rounds, and the ratio within a round is less
affected than the times) and the median step time.

Goals (issue 9): <= 1.15x for the pixel and overlap losses, <= 1.5x for ``lovasz``, ``cldice``,
``boundary``, ``hausdorff_dt``, ``unified_focal`` and the compounds that contain them. Losses
added after the issue (``topk_cross_entropy``, ``dice_topk``, ``skeleton_recall``,
``dice_skeleton_recall``, ``mcc``, ``boundary_dou``) are held to the pixel/overlap goal.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "loss_in_step.json"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Losses inside the train step"
REFERENCE = "cross_entropy"
HEAVY = ("lovasz", "cldice", "boundary", "hausdorff_dt", "unified_focal")
# Compounds that contain a heavy loss (held to the heavy goal).
HEAVY_COMPOUNDS = ("dice_boundary", "dice_hausdorff")
GOALS = {"pixel/overlap": 1.15, "heavy": 1.5}
# --quick: configs/runlocal.py's sizes on each loss's config.
QUICK = {
  "model.features": 4,
  "model.depth": 2,
  "model.num_groups": 2,
  "data.image_size": 16,
  "data.synthetic.num_train": 64,
  "data.synthetic.num_validation": 16,
  "data.synthetic.num_test": 16,
  "data.num_threads": 1,
  "train.batch_size": 8,
}


def _bench_train():
  """benchmarks/train.py as a module (its setup and compile helpers)."""
  spec = importlib.util.spec_from_file_location("_bench_train", ROOT / "benchmarks" / "train.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def goal_of(name: str) -> tuple[str, float]:
  kind = "heavy" if name in HEAVY or name in HEAVY_COMPOUNDS else "pixel/overlap"
  return kind, GOALS[kind]


def loss_config(bench, name: str, overrides: dict):
  """``configs/<name>.py`` (the default config with loss ``name``) with ``overrides``."""
  path = ROOT / "configs" / f"{name}.py"
  if path.exists():
    config = bench.load_config(path)
  else:
    config = bench.load_config(ROOT / "configs" / "default.py")
    config.loss.name = name
  for key, value in overrides.items():
    *parents, field = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[field] = value
  return config


def build(names, overrides: dict) -> dict:
  """``{name: row}`` with each loss's compiled step, state and batch."""
  import jax

  from seg_jax import train
  from seg_jax.training import loop

  bench = _bench_train()
  rows = {}
  for name in names:
    config = loss_config(bench, name, overrides)
    declared = {}

    def targets(num_classes, config=config, declared=declared):
      declared.update(loop._loss_targets(config, num_classes).get("targets", {}))
      return declared

    model, loss_fn, tx, schedule, mesh, batch, _ = bench._setup(config, targets=targets)
    missing = sorted(set(declared) - set(batch))
    if missing:
      raise RuntimeError(f"{name}: the batch lacks the loss's targets {missing}")
    state = train.init_state(model, tx, mesh, config.train.seed)
    compiled, compile_s, _ = bench._compile(model, loss_fn, tx, schedule, mesh, state, batch)
    for _ in range(2):
      state, out = compiled(state, batch)
    jax.block_until_ready(out)
    rows[name] = {
      "compiled": compiled,
      "state": state,
      "batch": batch,
      "out": out,
      "times": [],
      "ratios": [],
      "compile_s": compile_s,
      "targets": sorted(declared),
      "num_devices": mesh.devices.size,
      "global_batch": config.train.batch_size,
      "input_shape": list(batch["image"].shape[1:]),
      "model": {"features": config.model.features, "depth": config.model.depth},
    }
    print(f"  compiled {name} ({compile_s:.1f} s)", flush=True)
  return rows


def _step(row) -> float:
  import jax

  tic = time.perf_counter()
  row["state"], row["out"] = row["compiled"](row["state"], row["batch"])
  jax.block_until_ready(row["out"])
  return time.perf_counter() - tic


def time_rounds(rows: dict, rounds: int) -> None:
  ref = rows[REFERENCE]
  others = [r for name, r in rows.items() if name != REFERENCE]
  for _ in range(rounds):
    first = _step(ref)
    times = [_step(r) for r in others]
    last = _step(ref)
    ref["times"] += [first, last]
    base = (first + last) / 2
    for r, t in zip(others, times, strict=True):
      r["times"].append(t)
      r["ratios"].append(t / base)
  ref["ratios"] = [1.0] * rounds


def summarize(rows: dict) -> list[dict]:
  out = []
  for name, r in rows.items():
    kind, goal = goal_of(name)
    ratio = statistics.median(r["ratios"])
    out.append({
      "name": name,
      "ratio_to_cross_entropy": ratio,
      "ratio_min": min(r["ratios"]),
      "ratio_max": max(r["ratios"]),
      "step_ms_median": 1e3 * statistics.median(r["times"]),
      "step_ms_min": 1e3 * min(r["times"]),
      "compile_s": r["compile_s"],
      "precomputed_targets": r["targets"],
      "goal_kind": kind,
      "goal": goal,
      "goal_met": None if name == REFERENCE else ratio <= goal,
      "final_loss": float(r["out"]["loss"]),
      "finite": bool(r["out"]["finite"]),
    })  # fmt: skip
  return out


def table_lines(result: dict, *, markdown: bool) -> list[str]:
  head = ("loss", "step / cross_entropy step (median; min-max)", "step ms (median)",
          "precomputed targets", "goal")  # fmt: skip
  lines = []
  for r in result["rows"]:
    if r["goal_met"] is None:
      verdict = "reference"
    else:
      verdict = f"{'met' if r['goal_met'] else 'MISSED'} <= {r['goal']}x ({r['goal_kind']})"
    lines.append((
      r["name"], f"{r['ratio_to_cross_entropy']:.2f}x ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})",
      f"{r['step_ms_median']:.0f}", ", ".join(r["precomputed_targets"]) or "-", verdict,
    ))  # fmt: skip
  if markdown:
    return [
      "| " + " | ".join(head) + " |",
      "|---|---:|---:|---|---|",
      *("| " + " | ".join(line) + " |" for line in lines),
    ]
  return ["  " + ", ".join(line) for line in lines]


def write_markdown(path: pathlib.Path, result: dict) -> None:
  from seg_jax.machine import write_section

  m = result["machine"]
  s = result["setup"]
  met = [r for r in result["rows"] if r["goal_met"]]
  judged = [r for r in result["rows"] if r["goal_met"] is not None]
  missed = [r["name"] for r in judged if not r["goal_met"]]
  section = [
    SECTION,
    "",
    "Written by `python benchmarks/loss_in_step.py` (raw numbers: "
    "`benchmarks/results/loss_in_step.json`).",
    f"Machine: {m['cpu']}, {m['cores']} cores, {m['backend']} backend ({m['num_devices']} "
    f"device(s)); jax {m['jax']}, Python {m['python']}; {m['date']} (1-min load average "
    f"{m['loadavg_1min_at_start']} at start, {result['loadavg_1min_at_end']} at the end).",
    "",
    f"The trainer's step (U-Net features={s['model']['features']} depth={s['model']['depth']}, "
    f"batch {s['global_batch']} x {tuple(s['input_shape'])} on {s['num_devices']} device(s), "
    "forward, loss, backward, clipping, AdamW) with each registry loss from its "
    "`configs/<loss>.py`, as a ratio to the same step with `cross_entropy`, "
    f"{result['rounds']} rounds (in each, `cross_entropy` first and last, every loss once "
    "between; ratio to the mean of the round's two `cross_entropy` steps; median over rounds). "
    "Losses with per-example targets get them precomputed by the data pipeline, as the "
    "trainer does. Goals (issue 9): <= 1.15x pixel and overlap losses (and the losses added "
    "since), <= 1.5x lovasz, cldice, boundary, hausdorff_dt, unified_focal and their compounds. "
    f"Met: {len(met)} of {len(judged)}" + (f"; missed: {', '.join(missed)}." if missed else "."),
    "",
    *table_lines(result, markdown=True),
  ]
  write_section(path, section)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="runlocal sizes, 2 rounds (smoke test)")
  p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 7; quick 2)")
  p.add_argument("--losses", default=None, help="comma-separated subset (default: all)")
  p.add_argument("--cpu_devices", type=int, default=-1, help="CPU devices, as benchmarks/train.py")
  p.add_argument("--json", type=pathlib.Path, default=None, help="where to write the JSON")
  p.add_argument("--markdown", type=pathlib.Path, default=None, help="BENCHMARKS.md to update")
  p.add_argument("--data_dir", default=None, help="tfds data directory (config.data.data_dir)")
  args = p.parse_args(argv)

  if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
  from seg_jax import losses
  from seg_jax.machine import machine_info, save_results
  from seg_jax.training import devices

  overrides = dict(QUICK) if args.quick else {}
  if args.data_dir is not None:
    overrides["data.data_dir"] = args.data_dir
  batch_size = overrides.get("train.batch_size", 16)
  devices.setup_cpu_devices(args.cpu_devices, (batch_size,))
  names = losses.names() if args.losses is None else args.losses.split(",")
  unknown = sorted(set(names) - set(losses.names()))
  if unknown:
    p.error(f"--losses: unknown {unknown}; registry: {losses.names()}")
  names = [REFERENCE] + [n for n in names if n != REFERENCE]
  rounds = args.rounds or (2 if args.quick else 7)

  result = {"machine": machine_info(), "rounds": rounds}
  print(
    f"seg_jax loss-in-step benchmark ({result['machine']['cores']} cores, "
    f"{result['machine']['num_devices']} devices, load "
    f"{result['machine']['loadavg_1min_at_start']}): {len(names)} losses",
    flush=True,
  )
  rows = build(names, overrides)
  time_rounds(rows, rounds)
  ref = rows[REFERENCE]
  result["setup"] = {k: ref[k] for k in ("num_devices", "global_batch", "input_shape", "model")}
  result["rows"] = summarize(rows)
  result["loadavg_1min_at_end"] = round(os.getloadavg()[0], 2)
  print("\n".join(table_lines(result, markdown=False)), flush=True)
  json_path = args.json if args.json or args.quick else RESULTS
  md_path = args.markdown if args.markdown or args.quick else BENCHMARKS_MD
  save_results(result, json_path, md_path, write_markdown)
  return result


if __name__ == "__main__":
  main()
