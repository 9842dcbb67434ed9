r"""Train-step throughput, compile time and memory of the default U-Net (configs/default.py).

Usage::

  python benchmarks/train.py            # default config; writes benchmarks/results/train.json
                                        # and the '## Training' section of BENCHMARKS.md
  python benchmarks/train.py --quick    # configs/runlocal.py sizes, a smoke test; writes only
                                        # --json / --markdown if given
  python benchmarks/train.py --api=linen,nnx   # the NNX trainer step beside the same step on
                                        # the former Linen U-Net (benchmarks/linen_unet.py);
                                        # writes benchmarks/results/train_linen_nnx.json

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

With ``--api=linen,nnx`` both steps are built in one process: the trainer's step as it is (NNX:
the state's variables merged into the module inside the step), and the same step with the model
application replaced by the Linen U-Net's ``apply`` on a Linen-initialised state of the same
shapes (same loss, optimizer, mesh, donation, batch). Each is compiled in turn, then the timed
steps alternate between the two (one Linen step, one NNX step, ...), so that load changes on a
shared machine hit both alike; the ratios NNX / Linen of the median step time and of the compile
time are reported.

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
RESULTS_APIS = ROOT / "benchmarks" / "results" / "train_linen_nnx.json"
APIS = ("linen", "nnx")
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Training"
API_SECTION = "## Training: NNX vs Linen"


def load_config(path: pathlib.Path):
  if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
  spec = importlib.util.spec_from_file_location("_bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _linen_parts(model, tx, input_shape, mesh, seed: int):
  """``(state, apply_model)`` for the Linen U-Net of ``model``'s configuration: a fresh
  Linen-initialised :class:`TrainState` and the Linen form of ``training.state.apply_model``."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from seg_jax import train

  if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
  from linen_unet import UNet as LinenUNet

  kwargs = {k: v for k, v in model.config.items() if k not in ("in_features", "spatial_dims")}
  linen = LinenUNet(**kwargs)

  def init():
    variables = linen.init(jax.random.key(seed), jnp.zeros((1, *input_shape)), train=False)
    params = variables["params"]
    return train.TrainState(
      jnp.zeros((), jnp.int32), params, variables.get("batch_stats", {}), tx.init(params)
    )

  state = jax.jit(
    init,
    out_shardings=NamedSharding(mesh, P()),
    compiler_options={"xla_backend_optimization_level": 0},
  )()

  def apply_model(_, state, params, images, *, train):
    variables = {"params": params}
    if jax.tree.leaves(state.batch_stats):
      variables["batch_stats"] = state.batch_stats
      if train:
        out, updates = linen.apply(variables, images, train=True, mutable=["batch_stats"])
        return out, updates["batch_stats"]
    return linen.apply(variables, images, train=train), state.batch_stats

  return state, apply_model


def _compile(model, loss_fn, tx, schedule, mesh, state, batch, apply_model):
  """The compiled train step of ``api`` (``apply_model`` swapped in while it is traced), its
  compile time and XLA's memory estimate."""
  from seg_jax import train
  from seg_jax.training import steps as steps_module

  original = steps_module.apply_model
  if apply_model is not None:
    steps_module.apply_model = apply_model
  try:
    step = train.make_train_step(model, loss_fn, tx, schedule, mesh)
    tic = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - tic
  finally:
    steps_module.apply_model = original
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
  return compiled, compile_s, xla_bytes


def run(config, *, steps: int, apis=("nnx",), compile_repeats: int = 1) -> dict:
  """Results of the trainer's step for each of ``apis`` ('nnx', the trainer's own; 'linen',
  the same step on the Linen U-Net), keyed by api; timed steps alternate between the apis, and
  the compile time is the fastest of ``compile_repeats`` compiles (alternating too)."""
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
  input_shape = (*ds.spatial_shape, ds.in_channels)
  model = train.build_model(config, ds.num_classes, input_shape)
  loss_fn = train.build_loss(config)
  tx, schedule = train.make_optimizer(t)
  sharding = NamedSharding(mesh, P(train.AXIS))
  batches = seg_data.train_batches(ds, batch_size=t.batch_size, seed=t.seed, sharding=sharding)
  batch = next(batches)
  batches.close()

  runs = {}
  for api in apis:
    if api == "linen":
      state, apply_model = _linen_parts(model, tx, input_shape, mesh, t.seed)
    else:
      state, apply_model = train.init_state(model, tx, mesh, t.seed), None
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
    runs[api] = dict(state=state, apply_model=apply_model, n_params=n_params, compiles=[])
  # Compile every api's step `compile_repeats` times, alternating (a fresh jit each time), and
  # keep the fastest: the first compile of a process also pays one-time costs.
  for _ in range(compile_repeats):
    for r in runs.values():
      r["compiled"], compile_s, r["xla_bytes"] = _compile(
        model, loss_fn, tx, schedule, mesh, r["state"], batch, r["apply_model"]
      )
      r["compiles"].append(compile_s)
  for r in runs.values():
    state, compiled = r["state"], r["compiled"]
    for _ in range(2):
      state, out = compiled(state, batch)
    jax.block_until_ready(out)
    r.update(state=state, out=out, times=[], compile_s=min(r["compiles"]))
  for _ in range(steps):
    for r in runs.values():
      tic = time.perf_counter()
      r["state"], r["out"] = r["compiled"](r["state"], batch)
      jax.block_until_ready(r["out"])
      r["times"].append(time.perf_counter() - tic)

  peaks = []
  for d in jax.local_devices():
    stats = d.memory_stats() if hasattr(d, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(int(stats["peak_bytes_in_use"]))
  results = {}
  for api, r in runs.items():
    median = statistics.median(r["times"])
    results[api] = {
      "api": api,
      "model": {
        "features": config.model.features,
        "depth": config.model.depth,
        "norm": config.model.norm,
        "dtype": config.model.dtype,
        "parameters": r["n_params"],
      },
      "loss": config.loss.name,
      "global_batch": t.batch_size,
      "input_shape": list(input_shape),
      "num_devices": mesh.devices.size,
      "compile_s": r["compile_s"],
      "compile_s_all": r["compiles"],
      "steps_timed": steps,
      "step_ms_median": 1e3 * median,
      "step_ms_min": 1e3 * min(r["times"]),
      "step_ms_max": 1e3 * max(r["times"]),
      "images_per_s": t.batch_size / median,
      "final_loss": float(r["out"]["loss"]),
      "xla_step_bytes_per_device": r["xla_bytes"],
      # Device peak and process RSS are of the whole process (every api run so far).
      "device_peak_bytes": max(peaks) if peaks else None,
      # ru_maxrss is in KiB on Linux.
      "process_peak_rss_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
    }
  return results


def ratios(results: dict) -> dict:
  """NNX / Linen ratios of the median step time and the compile time (> 1: NNX slower)."""
  a, b = results["nnx"], results["linen"]
  return {
    "step_ms_median": a["step_ms_median"] / b["step_ms_median"],
    "compile_s": a["compile_s"] / b["compile_s"],
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


def api_lines(result: dict, *, markdown: bool) -> list[str]:
  """The side-by-side table of ``--api=linen,nnx``."""
  rows = []
  for api in APIS:
    r = result["apis"][api]
    rows.append(
      (api, f"{r['compile_s']:.1f} s", f"{r['step_ms_median']:.1f} ms "
       f"({r['step_ms_min']:.1f}-{r['step_ms_max']:.1f})", f"{r['images_per_s']:.1f}",
       f"{r['model']['parameters']:,}", _mib(r["xla_step_bytes_per_device"]))
    )  # fmt: skip
  q = result["ratio_nnx_over_linen"]
  rows.append(("NNX / Linen", f"{q['compile_s']:.2f}x", f"{q['step_ms_median']:.2f}x", "", "", ""))
  head = ("api", "compile", "step (median, min-max)", "images/s", "parameters", "XLA memory")
  if markdown:
    return [
      "| " + " | ".join(head) + " |",
      "|" + "---|" * len(head),
      *("| " + " | ".join(row) + " |" for row in rows),
    ]
  return [
    "  " + ", ".join(f"{k}: {v}" for k, v in zip(head, row, strict=True) if v) for row in rows
  ]


def write_api_markdown(path: pathlib.Path, result: dict) -> None:
  """Replaces (or adds) the '## Training: NNX vs Linen' section of BENCHMARKS.md."""
  from seg_jax.machine import write_section

  m = result["machine"]
  r = result["apis"]["nnx"]
  section = [
    API_SECTION,
    "",
    "Written by `python benchmarks/train.py --api=linen,nnx` (raw numbers: "
    "`benchmarks/results/train_linen_nnx.json`).",
    f"Machine: {m['cpu']}, {m['cores']} cores, {m['backend']} backend ({m['num_devices']} "
    f"device(s)); jax {m['jax']}, flax {m['flax']}, Python {m['python']}; {m['date']} "
    f"(1-min load average at start {m['loadavg_1min_at_start']}).",
    "",
    "The trainer's step on the NNX U-Net (variables merged into the module inside the step) "
    "beside the same step on the former Linen U-Net (`benchmarks/linen_unet.py`, same "
    f"topology), in one process: U-Net features={r['model']['features']} "
    f"depth={r['model']['depth']} norm={r['model']['norm']} {r['model']['dtype']}, loss "
    f"{r['loss']}, global batch {r['global_batch']} x {tuple(r['input_shape'])} on "
    f"{r['num_devices']} device(s), {r['steps_timed']} timed steps alternating between the "
    "two. Compile time is `lower` + `compile` of the step, the fastest of two compiles per api "
    "(alternating). A shared machine makes these numbers noisy: compare the ratios.",
    "",
    *api_lines(result, markdown=True),
  ]
  write_section(path, section)


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
  p.add_argument(
    "--api",
    default="nnx",
    help="'nnx' (the trainer's step) or 'linen,nnx' (side by side, with ratios)",
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
  apis = tuple(sorted(set(args.api.split(","))))
  if apis not in (("nnx",), APIS):
    p.error(f"--api must be 'nnx' or 'linen,nnx', got {args.api!r}")

  result = {"machine": machine_info(), "config": str(config_path)}
  print(
    f"seg_jax train-step benchmark on {result['machine']['cpu']} "
    f"({result['machine']['cores']} cores, {jax.device_count()} {jax.default_backend()} "
    f"device(s), load {result['machine']['loadavg_1min_at_start']}), config {config_path}",
    flush=True,
  )
  runs = run(config, steps=steps, apis=apis, compile_repeats=2 if apis == APIS else 1)
  result["result"] = runs["nnx"]
  if apis == APIS:
    result["apis"] = runs
    result["ratio_nnx_over_linen"] = ratios(runs)
    print("\n".join(api_lines(result, markdown=False)), flush=True)
    default_json, write = RESULTS_APIS, write_api_markdown
  else:
    print("\n".join(summary_lines(result, markdown=False)), flush=True)
    default_json, write = RESULTS, write_markdown
  json_path = args.json if args.json or args.quick else default_json
  md_path = args.markdown if args.markdown or args.quick else BENCHMARKS_MD
  save_results(result, json_path, md_path, write)
  return result


if __name__ == "__main__":
  main()
