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
import functools
import importlib.util
import os
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


def _compile(model, loss_fn, tx, schedule, mesh, state, batch):
  """The compiled train step, its compile time and XLA's memory estimate."""
  from seg_jax import train

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
  return compiled, compile_s, xla_bytes


def _setup(config, mesh=None, targets=None):
  """``(model, loss_fn, tx, schedule, mesh, batch, input_shape)`` of ``config``: the trainer's
  parts and one global training batch (with the per-example ``targets`` if given, as
  ``train_batches(targets=...)``; a callable ``targets(num_classes)`` gives them)."""
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  from seg_jax import data as seg_data
  from seg_jax import train
  from seg_jax.training import config as train_config

  train_config.validate(config)
  t = config.train
  mesh = train.make_mesh() if mesh is None else mesh
  ds = seg_data.load(config.data)
  input_shape = (*ds.spatial_shape, ds.in_channels)
  model = train.build_model(config, ds.num_classes, input_shape)
  loss_fn = train.build_loss(config)
  tx, schedule = train.make_optimizer(t)
  sharding = NamedSharding(mesh, P(train.AXIS))
  extra = {}
  if callable(targets):
    targets = targets(ds.num_classes)
  if targets:
    extra = {"targets": targets, "channels": train_config.output_channels(config, ds.num_classes)}
  batches = seg_data.train_batches(
    ds, batch_size=t.batch_size, seed=t.seed, sharding=sharding, **extra
  )
  batch = next(batches)
  batches.close()
  return model, loss_fn, tx, schedule, mesh, batch, input_shape


def run(config, *, steps: int, compile_repeats: int = 1) -> dict:
  """Results of the trainer's step (keyed ``'nnx'``, the model's API); the compile time is the
  fastest of ``compile_repeats`` compiles."""
  import jax
  import numpy as np

  from seg_jax import train

  t = config.train
  model, loss_fn, tx, schedule, mesh, batch, input_shape = _setup(config)

  runs = {}
  state = train.init_state(model, tx, mesh, t.seed)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  runs["nnx"] = dict(state=state, n_params=n_params, compiles=[])
  # Compile the step `compile_repeats` times (a fresh jit each time) and
  # keep the fastest: the first compile of a process also pays one-time costs.
  for _ in range(compile_repeats):
    for r in runs.values():
      r["compiled"], compile_s, r["xla_bytes"] = _compile(
        model, loss_fn, tx, schedule, mesh, r["state"], batch
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


# The --torch configurations: (name, config overrides) on top of the chosen config.
TORCH_CONFIGS = (
  ("default", {}),
  ("large", {"model.features": 32, "data.image_size": 128, "train.batch_size": 8}),
)
TORCH_SECTION = "## Training: seg_jax vs PyTorch"


def _rss_kib() -> tuple[int, int]:
  """``(VmRSS, VmHWM)`` of this process in KiB (Linux ``/proc/self/status``)."""
  fields = {}
  with open("/proc/self/status") as f:
    for line in f:
      key, _, value = line.partition(":")
      if key in ("VmRSS", "VmHWM"):
        fields[key] = int(value.split()[0])
  return fields["VmRSS"], fields["VmHWM"]


def _reset_peak_rss() -> int:
  """Resets the process's peak RSS (``VmHWM``) to its current RSS; returns that RSS (KiB)."""
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
  return _rss_kib()[0]


def _peak_rss_delta(run_steps) -> int:
  """Bytes the peak RSS rises above the current RSS while ``run_steps()`` runs."""
  start = _reset_peak_rss()
  run_steps()
  return (_rss_kib()[1] - start) * 1024


def _timed(fn) -> float:
  tic = time.perf_counter()
  fn()
  return time.perf_counter() - tic


def _stats(times: list[float], batch_size: int) -> dict:
  median = statistics.median(times)
  return {
    "images_per_sec": batch_size / median,
    "step_ms_median": 1e3 * median,
    "step_ms_min": 1e3 * min(times),
    "step_ms_max": 1e3 * max(times),
    "steps_timed": len(times),
  }


def _override(config, overrides: dict):
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    section, field = key.split(".")
    config[section][field] = value
  return config


def run_torch(
  config,
  *,
  steps: int,
  configs=TORCH_CONFIGS,
  one_device: bool = False,
  torch_one_thread: bool = False,
) -> list:
  """seg_jax's train step beside the same U-Net's in PyTorch, for each of ``configs``.

  Per configuration: the JAX step is compiled (``lower`` + ``compile``), the PyTorch model built
  (same parameter count, asserted), both run 3 untimed steps (the first timed alone: first-step
  time; the peak-RSS rise over these 3 steps is the memory figure), then ``steps`` timed steps
  alternate JAX / PyTorch (and the JAX step on a 1-device mesh with ``one_device``, the PyTorch
  step with one thread with ``torch_one_thread``) on the same batch. The reported ratio is
  seg_jax's throughput over the faster PyTorch setting's.
  """
  import jax
  import numpy as np
  import torch

  from seg_jax import train

  if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
  import torch_unet

  rows = []
  threads = torch.get_num_threads()  # The PyTorch side's setting (the 1-thread side changes it).
  for name, overrides in configs:
    cfg = _override(config, overrides)
    t, m = cfg.train, cfg.model
    model, loss_fn, tx, schedule, mesh, batch, input_shape = _setup(cfg)
    meshes = {"jax": mesh}
    if one_device and mesh.devices.size > 1:
      meshes["jax_1_device"] = train.make_mesh(jax.devices()[:1])
    sides = {}
    for side, mesh_ in meshes.items():
      state = train.init_state(model, tx, mesh_, t.seed)
      batch_ = batch if mesh_ is mesh else jax.device_put(batch, jax.devices()[0])
      n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
      compiled, compile_s, xla_bytes = _compile(model, loss_fn, tx, schedule, mesh_, state, batch_)
      box = {"state": state}

      def step(compiled=compiled, box=box, batch_=batch_):
        box["state"], box["out"] = compiled(box["state"], batch_)
        jax.block_until_ready(box["out"])

      first = []
      rss = _peak_rss_delta(lambda step=step, first=first: [first.append(_timed(step))
                                                              for _ in range(3)])  # fmt: skip
      sides[side] = dict(
        step=step,
        times=[],
        fixed={
          "compile_s": compile_s,
          "first_step_s": first[0],
          "parameters": n_params,
          "num_devices": mesh_.devices.size,
          "xla_step_bytes_per_device": xla_bytes,
          "peak_rss_delta_bytes": rss,
        },
        box=box,
      )
    out_channels = model.config["num_classes"]
    torch.manual_seed(t.seed)
    net = torch_unet.TorchUNet(
      input_shape[-1], out_channels, features=m.features, depth=m.depth, num_groups=m.num_groups
    )
    n_torch = torch_unet.parameter_count(net)
    n_jax = sides["jax"]["fixed"]["parameters"]
    assert n_torch == n_jax, f"{name}: PyTorch U-Net has {n_torch} parameters, seg_jax {n_jax}"
    torch_step = torch_unet.make_step(
      net, lr=t.learning_rate, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay,
      grad_clip_norm=t.grad_clip_norm,
    )  # fmt: skip
    images = torch.from_numpy(np.array(batch["image"])).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(np.array(batch["label"], np.int64))
    tbox = {}

    def tstep(images=images, labels=labels, tbox=tbox, torch_step=torch_step, n=threads):
      torch.set_num_threads(n)
      tbox["loss"] = torch_step(images, labels)

    # With torch_one_thread, the same model and optimizer also stepped with 1 intra-op thread
    # (on a loaded machine OpenMP's 2-thread barriers can cost more than the second core gives).
    torch_sides = {"torch": tstep}
    if torch_one_thread and threads > 1:
      torch_sides["torch_1_thread"] = functools.partial(tstep, n=1)
    for side_name, fn in torch_sides.items():
      first = []
      rss = _peak_rss_delta(lambda first=first, fn=fn: [first.append(_timed(fn)) for _ in range(3)])
      sides[side_name] = dict(
        step=fn,
        times=[],
        fixed={
          "first_step_s": first[0],
          "parameters": n_torch,
          "threads": 1 if side_name == "torch_1_thread" else threads,
          "memory_format": "NCHW (contiguous)",
          "peak_rss_delta_bytes": rss,
        },
        box=tbox,
      )
    for _ in range(steps):
      for side in sides.values():
        side["times"].append(_timed(side["step"]))
    row = {
      "name": name,
      "model": {"features": m.features, "depth": m.depth, "norm": m.norm, "dtype": m.dtype},
      "loss": cfg.loss.name,
      "global_batch": t.batch_size,
      "input_shape": list(input_shape),
    }
    for side_name, side in sides.items():
      row[side_name] = {**_stats(side["times"], t.batch_size), **side["fixed"]}
    row["jax"]["final_loss"] = float(sides["jax"]["box"]["out"]["loss"])
    row["torch"]["final_loss"] = sides["torch"]["box"]["loss"]
    best = max(torch_sides, key=lambda k: row[k]["images_per_sec"])
    row["torch_best"] = best
    # Against PyTorch's faster thread setting (only "torch" without torch_one_thread).
    row["jax_over_torch_images_per_sec"] = (
      row["jax"]["images_per_sec"] / row[best]["images_per_sec"]
    )
    row["loadavg_1min_at_end"] = round(os.getloadavg()[0], 2)
    rows.append(row)
    print(f"  {name}: " + ", ".join(
      f"{k} {row[k]['images_per_sec']:.1f} images/s ({row[k]['step_ms_median']:.0f} ms)"
      for k in sides) + f"; jax/torch {row['jax_over_torch_images_per_sec']:.2f}x",
      flush=True)  # fmt: skip
    del sides
  return rows


def _plain_result(row: dict) -> dict:
  """A ``--torch`` row's JAX side in the fields of :func:`run`'s result."""
  import resource

  j = row["jax"]
  return {
    "api": "nnx",
    "model": {**row["model"], "parameters": j["parameters"]},
    "loss": row["loss"],
    "global_batch": row["global_batch"],
    "input_shape": row["input_shape"],
    "num_devices": j["num_devices"],
    "compile_s": j["compile_s"],
    "compile_s_all": [j["compile_s"]],
    "steps_timed": j["steps_timed"],
    "step_ms_median": j["step_ms_median"],
    "step_ms_min": j["step_ms_min"],
    "step_ms_max": j["step_ms_max"],
    "images_per_s": j["images_per_sec"],
    "final_loss": j["final_loss"],
    "xla_step_bytes_per_device": j["xla_step_bytes_per_device"],
    "device_peak_bytes": None,
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


def torch_lines(rows: list, *, markdown: bool) -> list[str]:
  """The table of ``--torch``: one line per (config, side) and the JAX / PyTorch ratio."""
  head = ("config", "side", "images/s (median)", "step ms (median, min-max)", "compile",
          "first step", "peak RSS rise", "XLA memory / device")  # fmt: skip
  lines = []
  for row in rows:
    shape = "x".join(map(str, row["input_shape"][:-1]))
    config = (
      f"{row['name']}: features={row['model']['features']} depth={row['model']['depth']}, "
      f"{shape}, batch {row['global_batch']}, {row['jax']['parameters']:,} params"
    )
    for side in ("jax", "jax_1_device", "torch", "torch_1_thread"):
      r = row.get(side)
      if r is None:
        continue
      label = {
        "jax": f"seg_jax ({r.get('num_devices')} XLA CPU devices)",
        "jax_1_device": "seg_jax (1-device mesh)",
        "torch": f"PyTorch ({r.get('threads')} threads)",
        "torch_1_thread": "PyTorch (1 thread)",
      }[side]
      lines.append((
        config, label, f"{r['images_per_sec']:.1f}",
        f"{r['step_ms_median']:.0f} ({r['step_ms_min']:.0f}-{r['step_ms_max']:.0f})",
        f"{r['compile_s']:.1f} s" if "compile_s" in r else "", f"{r['first_step_s']:.2f} s",
        _mib(r["peak_rss_delta_bytes"]),
        _mib(r["xla_step_bytes_per_device"]) if "compile_s" in r else "",
      ))  # fmt: skip
      config = ""
    q = row["jax_over_torch_images_per_sec"]
    verdict = "met" if q >= 1 else "MISSED"
    best = "1 thread" if row.get("torch_best") == "torch_1_thread" else "its thread count"
    text = f"seg_jax / PyTorch ({best}) throughput: {q:.2f}x ({verdict}: goal >= 1x)"
    lines.append(("", text, "", "", "", "", "", ""))
  if markdown:
    return [
      "| " + " | ".join(head) + " |",
      "|" + "---|" * len(head),
      *("| " + " | ".join(line) + " |" for line in lines),
    ]
  return ["  " + ", ".join(v for v in line if v) for line in lines]


def write_torch_markdown(path: pathlib.Path, result: dict) -> None:
  """Replaces (or adds) the '## Training: seg_jax vs PyTorch' section (and '## Training')."""
  from seg_jax.machine import write_section

  write_markdown(path, result)
  m = result["machine"]
  rows = result["configs"]
  section = [
    TORCH_SECTION,
    "",
    "Written by `python benchmarks/train.py --torch` (raw numbers: `benchmarks/results/train.json`,"
    " key `configs`).",
    f"Machine: {m['cpu']}, {m['cores']} cores; seg_jax on {m['num_devices']} {m['backend']} "
    f"device(s) (jax {m['jax']}, flax {m['flax']}); PyTorch {result['torch']['version']} with "
    f"{result['torch']['threads']} intra-op threads; {m['date']}; 1-min load average "
    f"{m['loadavg_1min_at_start']} at start, "
    + ", ".join(f"{r['loadavg_1min_at_end']} after {r['name']}" for r in rows)
    + ".",
    "",
    "The same U-Net (`seg_jax.models.UNet`; its PyTorch twin `benchmarks/torch_unet.py`: same "
    "layers, GroupNorm, transposed convolutions, 1x1 head, equal parameter counts asserted) on "
    "the same batch of the config's data, loss `dice_ce`, AdamW with global-norm clipping: "
    "forward, backward and update. seg_jax: the trainer's step (`make_train_step`: shard_map "
    "over the data mesh, donated state, finite-update check). PyTorch: eager, NCHW, float32. "
    "Compile time is `lower` + `compile` of the JAX step; first step is the first call after "
    "it (PyTorch: its first step, which includes its one-time allocations). Peak RSS rise: the "
    "process's peak resident memory (`VmHWM`, reset through `/proc/self/clear_refs`) above its "
    "resident memory before the first three steps of that side, i.e. the step's working memory "
    "on the host (XLA memory: `compiled.memory_analysis()`, arguments + outputs - aliases + "
    f"temporaries). Then {rows[0]['jax']['steps_timed']} timed steps alternate between the "
    "sides, so load changes hit both; compare the ratio.",
    "",
    *torch_lines(rows, markdown=True),
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
    "--torch",
    action="store_true",
    help="seg_jax beside the same U-Net in PyTorch, at the default and a larger config",
  )
  p.add_argument(
    "--one_device",
    action="store_true",
    help="with --torch: also the JAX step on a 1-device mesh (the other device idle)",
  )
  p.add_argument(
    "--torch_one_thread",
    action="store_true",
    help="with --torch: also the PyTorch step with 1 intra-op thread (the thread count then "
    "switches every step, which slows PyTorch's 2-thread steps: judge the goal without it)",
  )
  p.add_argument(
    "--torch_threads", type=int, default=0, help="PyTorch intra-op threads (0: the cores)"
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
  if args.torch:
    import torch

    from seg_jax.training.devices import available_cores

    torch.set_num_threads(args.torch_threads or available_cores())
    result["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads()}
    configs = (("runlocal", {}),) if args.quick else TORCH_CONFIGS
    result["configs"] = run_torch(
      config, steps=steps, configs=configs, one_device=args.one_device,
      torch_one_thread=args.torch_one_thread,
    )  # fmt: skip
    print("\n".join(torch_lines(result["configs"], markdown=False)), flush=True)
    # The first configuration's JAX step also in the form of a plain run ("result").
    result["result"] = _plain_result(result["configs"][0])
    default_json, write = RESULTS, write_torch_markdown
    json_path = args.json if args.json or args.quick else default_json
    md_path = args.markdown if args.markdown or args.quick else BENCHMARKS_MD
    save_results(result, json_path, md_path, write)
    return result
  result["result"] = run(config, steps=steps)["nnx"]
  print("\n".join(summary_lines(result, markdown=False)), flush=True)
  default_json, write = RESULTS, write_markdown
  json_path = args.json if args.json or args.quick else default_json
  md_path = args.markdown if args.markdown or args.quick else BENCHMARKS_MD
  save_results(result, json_path, md_path, write)
  return result


if __name__ == "__main__":
  main()
