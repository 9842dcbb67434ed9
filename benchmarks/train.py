r"""Train-step throughput, compile time and memory of the default U-Net (configs/default.py).

Usage::

  python benchmarks/train.py            # default config; writes benchmarks/results/train.json
                                        # and the '## Training' section of BENCHMARKS.md
  python benchmarks/train.py --quick    # configs/runlocal.py sizes, a smoke test; writes only
                                        # --json / --markdown if given

Method: the trainer's own step (:func:`seg_jax.train.make_train_step`: ``jax.shard_map`` over
the ``'data'`` mesh of all devices inside ``jax.jit``, the configured loss, AdamW, clipping) is
lowered and compiled (compile time = ``lower`` + ``compile`` of the step, first call of nothing
else), warmed up for 2 steps, then ``--steps`` steps are timed one by one
(``block_until_ready``) on one fixed global batch of the configured data set, so the data
pipeline is not part of the number. Reported: median step time and images/s
(global batch / median step time), compile time, XLA's memory analysis of the compiled step
(arguments + outputs - donated aliases + temporaries per device, an upper bound of its device
memory), the
devices' ``peak_bytes_in_use`` where the backend reports it (GPU, TPU), and the process's peak
resident memory (which on CPU includes the device buffers).

On a CPU-only machine the benchmark makes up to one XLA CPU device per core, as ``launch.py``
does (:mod:`seg_jax.training.devices`; ``--cpu_devices`` to change), so the data-parallel step
uses every core.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import resource
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "train.json"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Training"


def load_config(path: pathlib.Path):
  if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
  spec = importlib.util.spec_from_file_location("_bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def run(config, *, steps: int) -> dict:
  import jax
  import numpy as np
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from seg_jax import data as seg_data
  from seg_jax import train
  from seg_jax.training import config as train_config

  train_config.validate(config)
  t = config.train
  mesh = train.make_mesh()
  ds = seg_data.load(config.data)
  model = train.build_model(config, ds.num_classes)
  loss_fn = train.build_loss(config)
  tx, schedule = train.make_optimizer(t)
  state = train.init_state(model, tx, (*ds.spatial_shape, ds.in_channels), mesh, t.seed)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  sharding = NamedSharding(mesh, P(train.AXIS))
  batches = seg_data.train_batches(ds, batch_size=t.batch_size, seed=t.seed, sharding=sharding)
  batch = next(batches)
  batches.close()
  step = train.make_train_step(model, loss_fn, tx, schedule, mesh)

  tic = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - tic
  memory = compiled.memory_analysis()
  xla_bytes = None
  if memory is not None:
    # The donated state is both an argument and an output: count its buffers once.
    xla_bytes = int(
      memory.argument_size_in_bytes
      + memory.output_size_in_bytes
      - memory.alias_size_in_bytes
      + memory.temp_size_in_bytes
    )

  for _ in range(2):
    state, out = compiled(state, batch)
  jax.block_until_ready(out)
  times = []
  for _ in range(steps):
    tic = time.perf_counter()
    state, out = compiled(state, batch)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - tic)
  median = statistics.median(times)

  peaks = []
  for d in jax.local_devices():
    stats = d.memory_stats() if hasattr(d, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(int(stats["peak_bytes_in_use"]))
  return {
    "model": {
      "features": config.model.features,
      "depth": config.model.depth,
      "norm": config.model.norm,
      "dtype": config.model.dtype,
      "parameters": n_params,
    },
    "loss": config.loss.name,
    "global_batch": t.batch_size,
    "input_shape": [*ds.spatial_shape, ds.in_channels],
    "num_devices": mesh.devices.size,
    "compile_s": compile_s,
    "steps_timed": steps,
    "step_ms_median": 1e3 * median,
    "step_ms_min": 1e3 * min(times),
    "step_ms_max": 1e3 * max(times),
    "images_per_s": t.batch_size / median,
    "final_loss": float(out["loss"]),
    "xla_step_bytes_per_device": xla_bytes,
    "device_peak_bytes": max(peaks) if peaks else None,
    # ru_maxrss is in KiB on Linux.
    "process_peak_rss_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
  }


def _mib(x) -> str:
  return "n/a" if x is None else f"{x / 2**20:.1f} MiB"


def summary_lines(result: dict, *, markdown: bool) -> list[str]:
  r = result["result"]
  m = result["machine"]
  rows = [
    (
      "model",
      f"U-Net features={r['model']['features']} depth={r['model']['depth']} "
      f"norm={r['model']['norm']} {r['model']['dtype']}, {r['model']['parameters']:,} parameters",
    ),
    ("loss", r["loss"]),
    (
      "global batch",
      f"{r['global_batch']} x {tuple(r['input_shape'])} on {r['num_devices']} "
      f"{m['backend']} device(s)",
    ),
    ("compile time (train step)", f"{r['compile_s']:.1f} s"),
    (
      "step time (median)",
      f"{r['step_ms_median']:.1f} ms (min {r['step_ms_min']:.1f}, "
      f"max {r['step_ms_max']:.1f}, {r['steps_timed']} steps)",
    ),
    ("throughput", f"{r['images_per_s']:.1f} images/s"),
    ("XLA memory of the step, per device", _mib(r["xla_step_bytes_per_device"])),
    ("device peak memory", _mib(r["device_peak_bytes"])),
    ("process peak RSS", _mib(r["process_peak_rss_bytes"])),
  ]
  if markdown:
    return ["| quantity | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
  return [f"  {k}: {v}" for k, v in rows]


def write_markdown(path: pathlib.Path, result: dict) -> None:
  """Replaces (or adds) the '## Training' section of BENCHMARKS.md, keeping other sections."""
  from seg_jax.machine import write_section

  m = result["machine"]
  section = [
    SECTION,
    "",
    "Written by `python benchmarks/train.py` (raw numbers: `benchmarks/results/train.json`).",
    f"Machine: {m['cpu']}, {m['cores']} cores, {m['backend']} backend ({m['num_devices']} "
    f"device(s)); jax {m['jax']}, optax {m['optax']}, Python {m['python']}; {m['date']} "
    f"(1-min load average at start {m['loadavg_1min_at_start']}).",
    "",
    "The trainer's data-parallel step (shard_map in jit, loss, AdamW, clipping) on one fixed "
    "global batch of the default config's data; the data pipeline is not timed.",
    "",
    *summary_lines(result, markdown=True),
  ]
  write_section(path, section)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="runlocal sizes, 3 steps (smoke test)")
  p.add_argument("--config", type=pathlib.Path, default=None, help="config file")
  p.add_argument("--steps", type=int, default=None, help="timed steps (default 20; quick 3)")
  p.add_argument("--data_dir", default=None, help="tfds data directory (config.data.data_dir)")
  p.add_argument(
    "--cpu_devices",
    type=int,
    default=-1,
    help="CPU devices (-1: the most, up to one per core, dividing the batch; 0: JAX's default)",
  )
  p.add_argument("--json", type=pathlib.Path, default=None, help="where to write the JSON")
  p.add_argument("--markdown", type=pathlib.Path, default=None, help="BENCHMARKS.md to update")
  args = p.parse_args(argv)

  import jax

  from seg_jax.machine import machine_info, save_results
  from seg_jax.training import devices

  default_config = "runlocal.py" if args.quick else "default.py"
  config_path = args.config or ROOT / "configs" / default_config
  config = load_config(config_path)
  devices.setup_cpu_devices(args.cpu_devices, (config.train.batch_size,))
  if args.data_dir is not None:
    config.data.data_dir = args.data_dir
  steps = args.steps or (3 if args.quick else 20)

  result = {"machine": machine_info(), "config": str(config_path)}
  print(
    f"seg_jax train-step benchmark on {result['machine']['cpu']} "
    f"({result['machine']['cores']} cores, {jax.device_count()} {jax.default_backend()} "
    f"device(s), load {result['machine']['loadavg_1min_at_start']}), config {config_path}",
    flush=True,
  )
  result["result"] = run(config, steps=steps)
  print("\n".join(summary_lines(result, markdown=False)), flush=True)

  json_path = args.json if args.json or args.quick else RESULTS
  md_path = args.markdown if args.markdown or args.quick else BENCHMARKS_MD
  save_results(result, json_path, md_path, write_markdown)
  return result


if __name__ == "__main__":
  main()
