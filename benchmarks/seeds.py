r"""Seeds of one loss as one program (``jax.vmap`` over stacked parameters) vs. in turn.

``compare`` trains every loss with several seeds. This script times, in one process, the two
ways of training ``N`` seeds of one loss with the default U-Net: ``N`` separate train steps
called in turn (what ``compare`` does), and one ``jax.jit(jax.vmap(step))`` over the ``N``
parameter sets and ``N`` batches stacked on a leading axis. Both run the same per-seed step
(forward, loss, gradient, AdamW update) on one device; the ratio says whether the vmapped
program is worth its complexity on this machine.

Run it with::

  python benchmarks/seeds.py                      # default model, N = 3
  python benchmarks/seeds.py --seeds=2 --quick    # tiny shapes, for the test

It prints a table and writes ``benchmarks/results/seeds.json``.

``--compare`` times instead what ships: ``seg_jax.compare.run_comparison`` of one loss with
``N`` seeds end to end (training, evaluations, checkpoints, per-image evaluation, report; data
built beforehand, fresh run directories under ``--workdir``), once with ``--seeds_mode=sequential``
and once with ``--seeds_mode=vmap``, and checks that the per-seed validation Dice of the two
agree. It writes ``seeds_compare.json`` (``seeds_compare_quick.json`` with ``--quick``)::

  python benchmarks/seeds.py --compare --steps=20          # default config, 3 seeds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from seg_jax import losses, machine, train  # noqa: E402
from seg_jax.models import UNet  # noqa: E402
from seg_jax.training import config as train_config  # noqa: E402


def _setup(quick: bool, num_seeds: int, loss_name: str):
  config = train_config.default_config()
  if quick:
    config.model.features, config.model.depth, config.model.num_groups = 4, 2, 2
    config.data.image_size, config.train.batch_size = 16, 4
  size, batch = config.data.image_size, config.train.batch_size
  shape = (batch, size, size, 3)
  model = train.build_model(config, 2, shape[1:])
  graphdef = nnx.graphdef(model)
  loss_fn = losses.get(loss_name)
  tx = optax.adamw(1e-3)

  def init(key):
    _, params, _ = train.split_model(UNet(**model.config, rngs=nnx.Rngs(key)))
    return params, tx.init(params)

  def step(params, opt_state, images, labels):
    def f(p):
      return loss_fn(nnx.merge(graphdef, p)(images, train=True), labels)

    loss, grads = jax.value_and_grad(f)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  keys = jax.random.split(jax.random.key(0), num_seeds)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(num_seeds, *shape)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 2, (num_seeds, batch, size, size)), jnp.int32)
  return config, init, step, keys, images, labels


def _time_interleaved(fns, repeats: int) -> list[float]:
  """Median seconds of each of ``fns``, called in turn in every repeat (after one warm-up).

  Interleaving the calls means a load that comes and goes on the machine slows both ways alike,
  so their ratio holds even when the absolute times do not.
  """
  for fn in fns:
    fn()  # Compilation and warm-up, not timed.
  times = [[] for _ in fns]
  for _ in range(repeats):
    for fn, t in zip(fns, times, strict=True):
      tic = time.perf_counter()
      fn()
      t.append(time.perf_counter() - tic)
  return [float(np.median(t)) for t in times]


def measure(num_seeds: int, quick: bool, repeats: int, loss_name: str) -> dict:
  config, init, step, keys, images, labels = _setup(quick, num_seeds, loss_name)
  states = [jax.jit(init)(k) for k in keys]
  one = jax.jit(step)

  def in_turn():
    out = None
    for s in range(num_seeds):
      out = one(*states[s], images[s], labels[s])
    jax.block_until_ready(out)

  stacked = jax.jit(jax.vmap(init))(keys)
  many = jax.jit(jax.vmap(step))

  def vmapped():
    jax.block_until_ready(many(*stacked, images, labels))

  t_turn, t_vmap = _time_interleaved([in_turn, vmapped], repeats)
  # The two ways compute the same thing: the losses of one step agree to float32 rounding.
  turn_losses = [float(one(*states[s], images[s], labels[s])[2]) for s in range(num_seeds)]
  vmap_losses = [float(x) for x in many(*stacked, images, labels)[2]]
  return {
    "seeds": num_seeds,
    "loss": loss_name,
    "model": {
      "features": config.model.features,
      "depth": config.model.depth,
      "norm": config.model.norm,
      "image_size": config.data.image_size,
      "batch_size": config.train.batch_size,
    },
    "in_turn_s": t_turn,
    "vmapped_s": t_vmap,
    "vmapped_over_in_turn": t_vmap / t_turn,
    "losses_in_turn": turn_losses,
    "losses_vmapped": vmap_losses,
    "device": f"{jax.device_count()} x {jax.devices()[0].platform}",
  }


def measure_compare(num_seeds: int, quick: bool, loss_name: str, steps: int, workdir: str) -> dict:
  """Wall times of a whole comparison of ``loss_name`` in both seeds modes (module docstring)."""
  import shutil

  from seg_jax import compare
  from seg_jax import data as seg_data

  config = train_config.default_config()
  config.data.data_dir = os.path.join(workdir, "tfds")
  config.train.progress_bar = False
  if quick:
    config.model.features, config.model.depth, config.model.num_groups = 4, 2, 2
    config.data.image_size, config.train.batch_size = 16, 8
    config.data.synthetic.num_train, config.data.synthetic.num_validation = 32, 8
    config.data.synthetic.num_test = 8
  seg_data.load(config.data)  # Built once, outside the timings.
  out = {}
  for mode in ("sequential", "vmap"):
    outdir = os.path.join(workdir, mode)
    shutil.rmtree(outdir, ignore_errors=True)
    tic = time.perf_counter()
    summary = compare.run_comparison(
      config, [loss_name], outdir, steps=steps, seeds=num_seeds, seeds_mode=mode,
      topology=False, num_examples=2, echo=lambda _: None,
    )  # fmt: skip
    out[f"{mode}_s"] = time.perf_counter() - tic
    out[f"{mode}_dice_per_seed"] = summary["results"][loss_name]["dice_mean"]["per_seed"]
  diffs = [
    abs(a - b)
    for a, b in zip(out["sequential_dice_per_seed"], out["vmap_dice_per_seed"], strict=True)
  ]
  return {
    "seeds": num_seeds,
    "loss": loss_name,
    "steps": steps,
    "model": {
      "features": config.model.features,
      "depth": config.model.depth,
      "image_size": config.data.image_size,
      "batch_size": config.train.batch_size,
    },
    **out,
    "vmap_over_sequential": out["vmap_s"] / out["sequential_s"],
    "max_dice_difference": max(diffs),
    "device": f"{jax.device_count()} x {jax.devices()[0].platform}",
  }


def _main_compare(args) -> dict:
  workdir = args.workdir or os.path.join("/tmp", "seeds_compare")
  result = measure_compare(args.seeds, args.quick, args.loss, args.steps, workdir)
  result["machine"] = machine.machine_info()
  m = result["model"]
  print(
    f"compare of {args.loss} with {args.seeds} seeds, {args.steps} steps, U-Net "
    f"{m['features']}x{m['depth']}, batch {m['batch_size']} at {m['image_size']}^2, "
    f"{result['device']}:"
  )
  print("| --seeds_mode | whole comparison (s) | ratio | per-seed validation Dice |")
  print("|---|---:|---:|---|")
  for mode in ("sequential", "vmap"):
    dice = " / ".join(f"{x:.4f}" for x in result[f"{mode}_dice_per_seed"])
    ratio = result[f"{mode}_s"] / result["sequential_s"]
    print(f"| {mode} | {result[f'{mode}_s']:.1f} | {ratio:.2f} | {dice} |")
  print(f"Largest per-seed Dice difference between the modes: {result['max_dice_difference']:.2e}")
  _save(result, args.out, "seeds_compare_quick.json" if args.quick else "seeds_compare.json")
  return result


def _save(result: dict, out: str, name: str) -> None:
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, name), "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--loss", default="dice_ce")
  parser.add_argument("--quick", action="store_true", help="tiny shapes (for the test)")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
  parser.add_argument(
    "--compare", action="store_true", help="time whole comparisons in both --seeds_mode"
  )
  parser.add_argument("--steps", type=int, default=20, help="with --compare: training steps")
  parser.add_argument("--workdir", default=None, help="with --compare: data and run directories")
  args = parser.parse_args(argv)
  if args.compare:
    return _main_compare(args)
  result = measure(args.seeds, args.quick, args.repeats, args.loss)
  result["machine"] = machine.machine_info()
  m = result["model"]
  print(
    f"{args.seeds} seeds of {args.loss}, U-Net {m['features']}x{m['depth']} {m['norm']}, "
    f"batch {m['batch_size']} at {m['image_size']}^2, {result['device']}:"
  )
  print("| way | time for one step of every seed (s) | ratio |")
  print("|---|---:|---:|")
  print(f"| in turn (compare's default) | {result['in_turn_s']:.3f} | 1.00 |")
  print(
    f"| one vmapped program | {result['vmapped_s']:.3f} | {result['vmapped_over_in_turn']:.2f} |"
  )
  _save(result, args.out, "seeds_quick.json" if args.quick else "seeds.json")
  return result


if __name__ == "__main__":
  main()
