r"""Where the JAX train step's time goes on CPU: variants of the default U-Net step side by side,
with the same U-Net's PyTorch step as the yardstick, in one process.

Usage::

  python benchmarks/train_variants.py               # default config; prints the table
  python benchmarks/train_variants.py --write       # ... and writes
                                                    # benchmarks/results/train_variants.json and
                                                    # the '## Training: where the JAX time goes'
                                                    # section of BENCHMARKS.md
  XLA_FLAGS=... python benchmarks/train_variants.py --tag=NAME   # the same under XLA flags
                                                    # (results keyed by --tag, merged into the JSON)

Rows (all on one fixed batch of the config's data; after compile and 2 warm-up calls each,
``--rounds`` rounds alternate over the rows, each row once per round; the table gives each row's
median time and the median over the rounds of its ratio to the faster of the round's two
PyTorch full steps, with 2 threads and with 1):

* ``torch: forward`` / ``forward+backward`` / ``full step``: ``benchmarks/torch_unet.py``'s
  U-Net with ``dice_ce`` (the full step adds clipping and AdamW), with as many threads as cores;
  ``full step, 1 thread``: the same with one thread.
* ``jax: forward`` / ``forward+backward``: the U-Net (train mode) and ``dice_ce``, jitted on one
  device; ``value_and_grad`` w.r.t. the parameters for the second.
* ``jax: trainer step``: :func:`seg_jax.train.make_train_step` on the mesh of all CPU devices
  (the trainer's setting); ``... 1-device mesh``: the same step on one device.
* ``jax: trainer step, <change>``: the trainer's step with one layer's implementation swapped at
  trace time. The model ships ``seg_jax.models.layers``' ``GroupNorm`` (statistics from
  per-channel sums, then ``x * a + b``), ``UpConv`` (the 2x2 stride-2 transposed convolution as
  one matrix product and a depth-to-space reshape) and ``max_pool`` (a reshape and a max); the
  rows ``flax's nnx.GroupNorm``, ``flax's nnx.ConvTranspose``, ``flax's nnx.max_pool`` and
  ``all three flax layers (before)`` put flax's implementations back (the same function of the
  same parameters: the step as it was before), so their ratio to the shipped step is each
  layer's gain. ``no GroupNorm`` is a different network: the normalisation's whole cost, for
  attribution only.
* ``jax: trainer step, 3x3 convolutions as im2col + one matmul``: every ``3 x 3`` convolution
  as the concatenation of the 9 shifted copies of its padded input and one matrix product
  (:func:`conv3_as_patches`), to see whether XLA CPU's matrix products beat its convolutions
  (and their gradients) here.
* ``jax: trainer step, XLA <options>``: the trainer's step compiled with XLA CPU options
  (:data:`XLA_OPTIONS`: YNNPACK for the convolutions, oneDNN, YNNPACK off).

The first step's loss of every trainer-step row (same state, same batch) is recorded: the swaps
and options compute the same step. ``check_patches`` measures the largest difference of each
swapped layer from flax's on random inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "train_variants.json"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Training: where the JAX time goes"
# Per-compile XLA options (``compile(compiler_options=...)``) tried on the trainer's step.
XLA_OPTIONS = {
  "YNNPACK convolutions": {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
    "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
  },
  "oneDNN": {"xla_cpu_use_onednn": True, "xla_cpu_experimental_onednn_custom_call": True},
  "no YNNPACK": {"xla_cpu_experimental_ynn_fusion_type": ""},
}


def _bench_train():
  spec = importlib.util.spec_from_file_location("_bench_train", ROOT / "benchmarks" / "train.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@contextlib.contextmanager
def patched(owner, name, fn):
  original = getattr(owner, name)
  setattr(owner, name, fn)
  try:
    yield
  finally:
    setattr(owner, name, original)


def conv3_as_patches(conv_call):
  """``nnx.Conv.__call__`` computing stride-1 ``3 x ... x 3`` ``'SAME'`` convolutions as
  im2col: the ``3^d`` shifted copies of the zero-padded input concatenated on the channel axis
  and one matrix product with the kernel reshaped to ``(3^d cin, cout)`` (the same function of
  the same parameters); any other convolution goes to ``conv_call``."""
  import itertools

  import jax.numpy as jnp

  def call(self, x):
    d = x.ndim - 2
    plain = all(
      v in (None, 1) or tuple(v) == (1,) * d
      for v in (self.strides, self.input_dilation, self.kernel_dilation)
    )
    plain = plain and self.feature_group_count == 1 and self.mask is None
    if tuple(self.kernel_size) != (3,) * d or self.padding != "SAME" or not plain:
      return conv_call(self, x)
    xp = jnp.pad(x, [(0, 0)] + [(1, 1)] * d + [(0, 0)])
    cols = [
      xp[(slice(None), *(slice(o, o + n) for o, n in zip(off, x.shape[1:-1], strict=True)))]
      for off in itertools.product(range(3), repeat=d)
    ]
    kernel = self.kernel[...]
    y = jnp.concatenate(cols, axis=-1) @ kernel.reshape(-1, kernel.shape[-1])
    return y + self.bias[...] if self.use_bias else y

  return call


def check_patches(seed: int = 0) -> dict:
  """Max abs difference of the shipped layers (``seg_jax.models.layers``) from flax's, on
  random inputs (must be ~1e-6)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from seg_jax.models import layers

  x = jax.random.normal(jax.random.key(seed), (2, 8, 8, 16))
  diffs = {}
  for ours, theirs, kwargs in (
    (layers.GroupNorm, nnx.GroupNorm, dict(num_groups=8)),
    (layers.UpConv, nnx.ConvTranspose, dict(kernel_size=(2, 2), strides=(2, 2), padding="VALID")),
  ):
    args = (16,) if ours is layers.GroupNorm else (16, 8)
    a, b = ours(*args, **kwargs, rngs=nnx.Rngs(0)), theirs(*args, **kwargs, rngs=nnx.Rngs(0))
    for layer in (a, b):
      layer.bias[...] = jax.random.normal(jax.random.key(2), layer.bias.shape)
    diffs[ours.__name__] = float(jnp.max(jnp.abs(a(x) - b(x))))
  conv = nnx.Conv(16, 8, (3, 3), padding="SAME", rngs=nnx.Rngs(0))
  diffs["conv3 as patches"] = float(
    jnp.max(jnp.abs(conv3_as_patches(nnx.Conv.__call__)(conv, x) - conv(x)))
  )
  pooled = layers.max_pool(x, (2, 2))
  diffs["max_pool"] = float(jnp.max(jnp.abs(pooled - nnx.max_pool(x, (2, 2), (2, 2)))))
  for k, v in diffs.items():
    if not v < 1e-4:
      raise AssertionError(f"{k} differs from flax's layer by {v}")
  return diffs


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rounds", type=int, default=10)
  p.add_argument("--tag", default="", help="name of this run's XLA flags (results key)")
  p.add_argument("--write", action="store_true", help="write the JSON and BENCHMARKS.md")
  p.add_argument("--only_step", action="store_true", help="only the trainer step and torch rows")
  p.add_argument("--quick", action="store_true", help="runlocal sizes, 1 round (smoke test)")
  p.add_argument("--cpu_devices", type=int, default=-1, help="CPU devices, as benchmarks/train.py")
  p.add_argument("--data_dir", default=None, help="tfds data directory (config.data.data_dir)")
  args = p.parse_args(argv)

  import jax
  import numpy as np
  import torch

  bench = _bench_train()
  from seg_jax import train
  from seg_jax.machine import machine_info
  from seg_jax.models import layers, unet
  from seg_jax.training import devices, steps

  cfg_name = "runlocal.py" if args.quick else "default.py"
  config = bench.load_config(ROOT / "configs" / cfg_name)
  devices.setup_cpu_devices(args.cpu_devices, (config.train.batch_size,))
  if args.data_dir is not None:
    config.data.data_dir = args.data_dir
  torch.set_num_threads(devices.available_cores())
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import torch_unet
  from flax import nnx

  t = config.train
  diffs = check_patches()
  model, loss_fn, tx, schedule, mesh, batch, input_shape = bench._setup(config)
  rows = {}

  # PyTorch.
  m = config.model
  net = torch_unet.TorchUNet(
    input_shape[-1], model.config["num_classes"], features=m.features, depth=m.depth,
    num_groups=m.num_groups,
  )  # fmt: skip
  images = torch.from_numpy(np.array(batch["image"])).permute(0, 3, 1, 2).contiguous()
  labels = torch.from_numpy(np.array(batch["label"], np.int64))
  full = torch_unet.make_step(
    net, lr=t.learning_rate, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay,
    grad_clip_norm=t.grad_clip_norm,
  )  # fmt: skip

  def torch_fwd():
    torch_unet.dice_ce(net(images), labels).detach()

  def torch_fwd_bwd():
    net.zero_grad(set_to_none=True)
    torch_unet.dice_ce(net(images), labels).backward()

  if not args.only_step:
    rows["torch: forward"] = torch_fwd
    rows["torch: forward+backward"] = torch_fwd_bwd
  threads = torch.get_num_threads()

  def torch_full(n):
    torch.set_num_threads(n)
    full(images, labels)
    torch.set_num_threads(threads)

  rows["torch: full step"] = lambda: torch_full(threads)
  if threads > 1:
    rows["torch: full step, 1 thread"] = lambda: torch_full(1)

  # JAX pieces on one device.
  state = train.init_state(model, tx, mesh, t.seed)
  dev0 = jax.devices()[0]
  one = jax.device_put(batch, dev0)
  params1 = jax.device_put(state.params, dev0)
  plain_loss = train.build_loss(config).func  # without axis_name
  graphdef = nnx.graphdef(model)

  def loss_of(params, images, labels):
    out = nnx.merge(graphdef, params)(images, train=True)
    return plain_loss(out, labels)

  if not args.only_step:
    fwd = jax.jit(loss_of)
    fwd_bwd = jax.jit(jax.value_and_grad(loss_of))
    rows["jax: forward (1 device)"] = lambda: jax.block_until_ready(
      fwd(params1, one["image"], one["label"])
    )
    rows["jax: forward+backward (1 device)"] = lambda: jax.block_until_ready(
      fwd_bwd(params1, one["image"], one["label"])
    )

  first_losses = {}

  def trainer_step(key, mesh_, batch_, patches=(), options=None):
    """The trainer's step (patched layers, XLA compiler options); records its first loss."""
    with contextlib.ExitStack() as stack:
      for cls, name, fn in patches:
        stack.enter_context(patched(cls, name, fn))
      st = train.init_state(model, tx, mesh_, t.seed)
      step = steps.make_train_step(model, loss_fn, tx, schedule, mesh_)
      compiled = step.lower(st, batch_).compile(compiler_options=options)
    box = {"state": st}

    def run():
      box["state"], out = compiled(box["state"], batch_)
      jax.block_until_ready(out)
      first_losses.setdefault(key, float(out["loss"]))

    rows[key] = run

  trainer_step("jax: trainer step", mesh, batch)
  if mesh.devices.size > 1:
    trainer_step("jax: trainer step, 1-device mesh", train.make_mesh([dev0]), one)
  if not args.only_step:
    # The shipped layers reverted to flax's (the step before they were shipped).
    gn = (layers.GroupNorm, "__call__", nnx.GroupNorm.__call__)
    up = (layers.UpConv, "__call__", nnx.ConvTranspose.__call__)
    trainer_step("jax: trainer step, flax's nnx.GroupNorm", mesh, batch, [gn])
    trainer_step("jax: trainer step, flax's nnx.ConvTranspose", mesh, batch, [up])
    pool = (unet, "max_pool", lambda x, window: nnx.max_pool(x, window, strides=window))
    trainer_step("jax: trainer step, flax's nnx.max_pool", mesh, batch, [pool])
    trainer_step("jax: trainer step, all three flax layers (before)", mesh, batch, [gn, up, pool])
    im2col = (nnx.Conv, "__call__", conv3_as_patches(nnx.Conv.__call__))
    trainer_step(
      "jax: trainer step, 3x3 convolutions as im2col + one matmul", mesh, batch, [im2col]
    )
    for label, options in XLA_OPTIONS.items():
      trainer_step(f"jax: trainer step, XLA {label}", mesh, batch, options=options)
    trainer_step(
      "jax: trainer step, no GroupNorm (attribution only)",
      mesh,
      batch,
      [(layers.GroupNorm, "__call__", lambda self, x, mask=None: x)],
    )

  for fn in rows.values():
    fn()
    fn()
  times = {k: [] for k in rows}
  ratios = {k: [] for k in rows}
  load0 = os.getloadavg()[0]
  for _ in range(1 if args.quick else args.rounds):
    round_t = {}
    for k, fn in rows.items():
      tic = time.perf_counter()
      fn()
      round_t[k] = time.perf_counter() - tic
    # The yardstick: the faster PyTorch full step (2 threads or 1) of this round.
    yardstick = min(v for k, v in round_t.items() if k.startswith("torch: full step"))
    for k, v in round_t.items():
      times[k].append(v)
      ratios[k].append(v / yardstick)
  out = {
    "tag": args.tag or "default",
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "machine": machine_info(),
    "loadavg_1min_at_timing_start": round(load0, 2),
    "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
    "torch_threads": torch.get_num_threads(),
    "rounds": len(next(iter(times.values()))),
    "patch_max_abs_diff": diffs,
    # The first step's loss of each trainer-step row, from the same state and batch: the swaps
    # and XLA options must not change it (the attribution-only row does).
    "first_step_loss": first_losses,
    "rows": [
      {
        "name": k,
        "ms_median": 1e3 * statistics.median(v),
        "ms_min": 1e3 * min(v),
        "ratio_to_torch_step": statistics.median(ratios[k]),
      }
      for k, v in times.items()
    ],
  }
  for r in out["rows"]:
    print(f"  {r['name']}: {r['ms_median']:.0f} ms (min {r['ms_min']:.0f}), "
          f"{r['ratio_to_torch_step']:.2f}x torch step", flush=True)  # fmt: skip
  if args.write:
    runs = json.loads(RESULTS.read_text())["runs"] if RESULTS.exists() else {}
    runs[out["tag"]] = out
    RESULTS.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    write_markdown(BENCHMARKS_MD, runs)
    print(f"updated {BENCHMARKS_MD}")
  return out


def _loss_text(x) -> str:
  return "" if x is None else f"{x:.6f}"


def write_markdown(path: pathlib.Path, runs: dict) -> None:
  """The '## Training: where the JAX time goes' section: one table per tagged run."""
  from seg_jax.machine import write_section

  section = [
    SECTION,
    "",
    "Written by `python benchmarks/train_variants.py --write` (raw numbers: "
    "`benchmarks/results/train_variants.json`; one table per run, `--tag` naming its "
    "`XLA_FLAGS`). Rows and method: the script's docstring. Each row's time is the median "
    "over the rounds, and its ratio is the median over the rounds of (row time / the faster "
    "PyTorch full step, 2 threads or 1, of the same round); compare ratios, not times, "
    "across runs.",
  ]
  for tag, run in runs.items():
    m = run["machine"]
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in run["patch_max_abs_diff"].items())
    section += [
      "",
      f"Run `{tag}` (XLA_FLAGS=`{run['xla_flags'] or '(none)'}`): {m['cpu']}, {m['cores']} "
      f"cores, {m['num_devices']} XLA CPU device(s), PyTorch {run['torch_threads']} threads; "
      f"{m['date']}; {run['rounds']} rounds; 1-min load average "
      f"{run['loadavg_1min_at_timing_start']} at the start of timing, "
      f"{run['loadavg_1min_at_end']} at the end. Max abs difference of the shipped layers "
      f"from flax's: {diffs}.",
      "",
      "| row | ms (median) | ms (min) | / PyTorch full step | first-step loss |",
      "|---|---:|---:|---:|---:|",
      *(
        f"| {r['name']} | {r['ms_median']:.0f} | {r['ms_min']:.0f} | "
        f"{r['ratio_to_torch_step']:.2f}x | "
        f"{_loss_text(run.get('first_step_loss', {}).get(r['name']))} |"
        for r in run["rows"]
      ),
    ]
  write_section(path, section)


if __name__ == "__main__":
  main()
