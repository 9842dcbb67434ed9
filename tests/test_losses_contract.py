"""Cross-cutting contract tests over every loss in the registry.

Every registered name is checked for: jit/grad/vmap called directly (the gradient against central
differences of the loss itself), bfloat16 inputs, ``shard_map`` over the 8 CPU devices with
``axis_name`` (value and gradient equal the single-device ones on the global batch),
finite values and gradients in the extreme cases, ``reduction='none'`` against ``'mean'``,
batch-order invariance, and the bad-input errors of the contract. The per-loss formulas are tested
against NumPy references in each loss's own test module.

Speed: one jitted ``value_and_grad`` per loss (and per ``per_image`` value) at ``(8, 6, 5, 3)`` is
shared by most tests; the error tests only trace (``jax.eval_shape``).
"""

import functools
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from seg_jax import losses

NAMES = losses.names()
REGION = [n for n in NAMES if "per_image" in losses.options(n)]
# Sums of a pixel loss and a region loss: their masked 'mean' is no single weighting of 'none'.
MIXED = {
  "dice_ce",
  "dice_focal",
  "unified_focal",
  "dice_boundary",
  "dice_hausdorff",
  "dice_skeleton_recall",
}
SHAPE = (8, 6, 5, 3)  # Batch 8: one image per device in the shard_map tests.

# Every registry name of the losses issue's catalogue.
CATALOGUE = (
  "binary_cross_entropy",
  "cross_entropy",
  "focal",
  "dice",
  "jaccard",
  "tversky",
  "focal_tversky",
  "generalized_dice",
  "log_cosh_dice",
  "lovasz",
  "boundary",
  "hausdorff_dt",
  "cldice",
  "unified_focal",
  "dice_ce",
  "dice_focal",
)


def _opts(per_image=None):
  """Options of the calls here: the defaults (every loss takes 3-channel integer class maps)."""
  return {} if per_image is None else {"per_image": per_image}


def _case(shape=SHAPE, seed=0):
  rng = np.random.default_rng(seed)
  logits = (2.0 * rng.standard_normal(shape)).astype(np.float32)
  labels = rng.integers(0, shape[-1], size=shape[:-1]).astype(np.int32)
  return logits, labels, np.ones(shape[:-1], np.float32)


@functools.cache
def _loss(name, per_image=None, **extra):
  fn = losses.lookup(name)
  kw = {**_opts(per_image), **extra}
  return lambda x, y, m: fn(x, y, mask=m, **kw)


def _none_per_image(name):
  """The ``per_image`` value with which ``reduction='none'`` exists (True for region losses)."""
  return True if name in REGION else None


@functools.cache
def _vag(name, per_image=None):
  """Jitted ``((mean, none), grad of mean)`` w.r.t. the logits of ``(logits, labels, mask)``.

  ``none`` (the ``reduction='none'`` values) is computed in the same program where that reduction
  exists for this ``per_image`` (pixel losses; region losses with ``per_image=True``), else None.
  """
  mean = _loss(name, per_image)
  none = _loss(name, per_image, reduction="none") if per_image is _none_per_image(name) else None

  def f(x, y, m):
    return mean(x, y, m), None if none is None else none(x, y, m)

  return jax.jit(jax.value_and_grad(f, has_aux=True))


def _value_grad(name, x, y, m, per_image=None):
  (value, _), grad = _vag(name, per_image)(x, y, m)
  return value, grad


def _per_image_values(name):
  return (None,) if name not in REGION else (False, True)


def _close(a, b, rtol=1e-5, atol=1e-6, err=""):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=err)


# ---------------------------------------------------------------- registry and package
def test_catalogue_is_registered():
  missing = sorted(set(CATALOGUE) - set(NAMES))
  assert not missing, f"not registered: {missing}"


def test_get_unknown_name_lists_registry():
  with pytest.raises(KeyError, match=r"Unknown loss 'nope'.*Registered losses: .*cross_entropy"):
    losses.get("nope")
  with pytest.raises(KeyError, match="Did you mean 'cross_entropy'"):
    losses.lookup("cross_entropi")


@pytest.mark.parametrize("name", NAMES)
def test_get_unknown_option_lists_valid_ones(name):
  valid = losses.options(name)
  assert {"mode", "from_logits", "mask", "ignore_index", "reduction", "axis_name"} <= set(valid)
  with pytest.raises(TypeError, match=r"no option\(s\) 'bogus'") as e:
    losses.get(name, bogus=1)
  assert ", ".join(valid) in str(e.value)
  assert losses.get(name).__name__ == losses.lookup(name).__name__


def test_loss_modules_import_only_jax_numpy_chex_and_the_standard_library():
  # A static scan of the import statements: a stray `import scipy` would pass the run-time check
  # below (jax itself imports scipy), so the allowed set is checked here.
  import ast
  import pathlib

  allowed = {"jax", "numpy", "chex", "seg_jax", "__future__"} | set(sys.stdlib_module_names)
  root = pathlib.Path(losses.__file__).parent
  found = {}
  for path in sorted(root.glob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        mods = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0:
        mods = [node.module]
      else:
        continue
      for mod in mods:
        top = mod.split(".")[0]
        if top not in allowed:
          found.setdefault(path.name, []).append(mod)
        if top == "seg_jax":
          assert mod.startswith("seg_jax.losses"), f"{path.name} imports {mod}"
  assert not found, f"seg_jax.losses imports outside jax/numpy/chex/stdlib: {found}"


def test_import_does_not_pull_the_training_stack():
  code = (
    "import sys, seg_jax.losses\n"
    "heavy = ('flax', 'optax', 'tensorflow_datasets', 'tensorflow', 'orbax', 'grain')\n"
    "print(','.join(m for m in heavy if m in sys.modules))\n"
  )
  out = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
  )
  assert out.stdout.strip() == "", f"seg_jax.losses imported {out.stdout.strip()}"


# ---------------------------------------------------------------- jit, grad, vmap, dtypes
@pytest.mark.parametrize("name", NAMES)
def test_jit_grad_matches_central_differences(name):
  x, y, m = _case()
  value, grad = _value_grad(name, x, y, m)
  assert value.shape == () and value.dtype == jnp.float32
  assert grad.shape == x.shape and np.isfinite(grad).all()
  v = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
  eps = 1e-3
  hi, _ = _value_grad(name, x + eps * v, y, m)
  lo, _ = _value_grad(name, x - eps * v, y, m)
  fd = (float(hi) - float(lo)) / (2 * eps)
  dd = float(np.sum(np.asarray(grad, np.float64) * v))
  assert abs(fd - dd) <= 2e-3 + 2e-2 * abs(dd), (fd, dd)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_and_bfloat16(name):
  # One compile checks both: vmap over two bfloat16 problems, compared with float32 calls.
  cases = [_case(seed=s) for s in (2, 3)]
  xb, yb, mb = (np.stack([c[i] for c in cases]) for i in range(3))
  xb, mb = jnp.asarray(xb, jnp.bfloat16), jnp.asarray(mb, jnp.bfloat16)
  got = jax.jit(jax.vmap(_loss(name)))(xb, yb, mb)
  assert got.shape == (2,) and got.dtype == jnp.float32
  for k, (x, y, m) in enumerate(cases):
    # Equal to the float32 computation on the same (rounded) values, close to the unrounded one.
    rounded = _value_grad(name, np.asarray(xb[k], np.float32), y, np.asarray(mb[k], np.float32))
    _close(got[k], rounded[0], rtol=1e-4, err=f"vmap entry {k}")
    _close(got[k], _value_grad(name, x, y, m)[0], rtol=3e-2, atol=1e-3, err=f"bfloat16 entry {k}")


@pytest.mark.parametrize("name", NAMES)
def test_float16_inputs_compute_in_float32(name):
  x, y, m = _case(seed=10)
  x16 = jnp.asarray(x, jnp.float16)
  got = jax.jit(_loss(name))(x16, y, jnp.asarray(m, jnp.float16))
  assert got.dtype == jnp.float32 and np.isfinite(got)
  # Equal to the float32 computation on the same (rounded) logits.
  want = _value_grad(name, np.asarray(x16, np.float32), y, m)[0]
  _close(got, want, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- shard_map over 8 devices
@pytest.mark.parametrize("name", NAMES)
def test_shard_map_equals_single_device(name):
  # Value and gradient w.r.t. the logits inside shard_map (as a data-parallel training step takes
  # them), for every per_image value in one program; compared with the single-device call.
  assert len(jax.devices()) == 8, "tests/conftest.py sets 8 CPU devices"
  mesh = Mesh(np.array(jax.devices()), ("data",))
  fn = losses.lookup(name)
  variants = _per_image_values(name)

  def per_device(x, y, m):
    out = []
    for per_image in variants:
      kw = _opts(per_image)
      out += jax.value_and_grad(lambda x, kw=kw: fn(x, y, mask=m, axis_name="data", **kw))(x)
    return tuple(out)

  sharded = jax.shard_map(
    per_device,
    mesh=mesh,
    in_specs=(P("data"), P("data"), P("data")),
    out_specs=(P(), P("data")) * len(variants),
  )
  x, y, m = _case(seed=4)
  m[0, :3] = 0  # Uneven kept-pixel counts across devices.
  out = jax.jit(sharded)(x, y, m)
  for i, per_image in enumerate(variants):
    want_value, want_grad = _value_grad(name, x, y, m, per_image)
    _close(out[2 * i], want_value, err=f"value, per_image={per_image}")
    _close(out[2 * i + 1], want_grad, rtol=1e-4, atol=1e-7, err=f"grad, per_image={per_image}")


# Binary (one sigmoid channel, integer 0/1 maps) and multilabel (dense 0/1 targets) under
# shard_map, for the losses whose paths differ most between modes (Lovasz's hinge and all-gather,
# the fused overlap sums, the sigmoid focal form, the distance maps, the skeletons).
OTHER_MODES = [
  "lovasz",
  "dice",
  "focal",
  "tversky",
  "cldice",
  "hausdorff_dt",
  "unified_focal",
  "topk_cross_entropy",
]


@pytest.mark.parametrize("mode", ["binary", "multilabel"])
@pytest.mark.parametrize("name", OTHER_MODES)
def test_shard_map_equals_single_device_binary_and_multilabel(name, mode):
  mesh = Mesh(np.array(jax.devices()), ("data",))
  fn = losses.lookup(name)
  rng = np.random.default_rng(11)
  channels = 1 if mode == "binary" else 2
  x = (2.0 * rng.standard_normal((8, 6, 5, channels))).astype(np.float32)
  if mode == "binary":
    y = (rng.random((8, 6, 5)) > 0.6).astype(np.int32)
  else:
    y = (rng.random((8, 6, 5, channels)) > 0.6).astype(np.float32)
  m = np.ones((8, 6, 5), np.float32)
  m[0, :3] = 0
  kw = {"mode": mode}

  def per_device(x, y, m):
    return jax.value_and_grad(lambda x: fn(x, y, mask=m, axis_name="data", **kw))(x)

  spec = P("data")
  sharded = jax.jit(
    jax.shard_map(per_device, mesh=mesh, in_specs=(spec,) * 3, out_specs=(P(), spec))
  )
  value, grad = sharded(x, y, m)
  want_value, want_grad = jax.jit(jax.value_and_grad(lambda x: fn(x, y, mask=m, **kw)))(x)
  _close(value, want_value, err="value")
  _close(grad, want_grad, rtol=1e-4, atol=1e-7, err="grad")


# ---------------------------------------------------------------- extreme inputs
@pytest.mark.parametrize("name", NAMES)
def test_finite_at_extremes(name):
  x, y, m = _case(seed=5)
  big = np.where(x > 0, 1e4, -1e4).astype(np.float32)
  empty = np.zeros(SHAPE[:-1], np.int32)  # Background only: no foreground object.
  zeros = np.zeros_like(m)
  cases = {
    "logits +-1e4": (big, y, m),
    "logits +-1e4, empty ground truth": (big, empty, m),
    "empty ground truth": (x, empty, m),
    "all pixels ignored": (x, y, zeros),
    "logits +-1e4, all ignored": (big, y, zeros),
  }
  for what, args in cases.items():
    value, grad = _value_grad(name, *args)
    assert np.isfinite(value) and np.isfinite(grad).all(), what
  # One-pixel images (a new shape, so one more compile).
  x1, y1, m1 = _case(shape=(2, 1, 1, 3), seed=6)
  for logits in (x1, np.where(x1 > 0, 1e4, -1e4).astype(np.float32)):
    value, grad = _value_grad(name, logits, y1, m1)
    assert np.isfinite(value) and np.isfinite(grad).all(), "one-pixel images"


# ---------------------------------------------------------------- reductions, batch order
@pytest.mark.parametrize("name", NAMES)
def test_reduction_none_consistent_with_mean(name):
  per_image = _none_per_image(name)
  x, y, m = _case(seed=7)
  (mean, none), _ = _vag(name, per_image)(x, y, m)
  assert none.shape == (SHAPE[0],) and none.dtype == jnp.float32
  # No mask and equal image sizes: every image counts equally in 'mean'.
  _close(np.mean(np.asarray(none, np.float64)), mean, rtol=1e-5)
  # Masked: pixel losses weight each image by its kept pixels; an image with none gives 0 and,
  # for region losses, drops out of the mean.
  if name in MIXED:
    return
  m[0] = 0
  m[1, :4] = 0
  (mean, none), _ = _vag(name, per_image)(x, y, m)
  none = np.asarray(none, np.float64)
  assert none[0] == 0
  if name in REGION:
    want = none[1:].mean()
  else:
    kept = m.reshape(SHAPE[0], -1).sum(1)
    want = (none * kept).sum() / kept.sum()
  _close(mean, want, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_batch_order_invariance(name):
  x, y, m = _case(seed=8)
  m[1, 2:] = 0
  perm = np.random.default_rng(9).permutation(SHAPE[0])
  value, grad = _value_grad(name, x, y, m)
  pvalue, pgrad = _value_grad(name, x[perm], y[perm], m[perm])
  _close(pvalue, value, rtol=1e-5)
  _close(pgrad, np.asarray(grad)[perm], rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- bad input
_L = (2, 6, 5, 3)
BAD_INPUTS = {
  # case: (logits shape, labels shape, labels dtype, extra kwargs, substrings of the message)
  "batch mismatch": (_L, (3, 6, 5), np.int32, {}, ["labels", "(3, 6, 5)", "(2, 6, 5, 3)"]),
  "spatial mismatch": (_L, (2, 6, 4), np.int32, {}, ["labels", "(2, 6, 4)", "(2, 6, 5, 3)"]),
  "channel mismatch": (
    _L,
    (2, 6, 5, 4),
    np.float32,
    {},
    ["labels", "(2, 6, 5, 4)", "(2, 6, 5, 3)"],
  ),
  "labels rank": (_L, (2, 6), np.int32, {}, ["labels", "(2, 6)", "(2, 6, 5, 3)"]),
  "mask shape": (
    _L,
    (2, 6, 5),
    np.int32,
    {"mask": (2, 6, 4)},
    ["mask", "(2, 6, 4)", "(2, 6, 5, 3)"],
  ),
  "float labels as class map": (_L, (2, 6, 5), np.float32, {}, ["labels", "(2, 6, 5)", "float32"]),
  "mode vs channels": (
    _L,
    (2, 6, 5),
    np.int32,
    {"mode": "binary"},
    ["mode='binary'", "3 channels", "(2, 6, 5, 3)"],
  ),
  "mode vs channels, one channel": (
    (2, 6, 5, 1),
    (2, 6, 5),
    np.int32,
    {"mode": "multiclass"},
    ["mode='multiclass'", "(2, 6, 5, 1)"],
  ),
  "logits rank": ((2, 6), (2,), np.int32, {}, ["logits", "(2, 6)", "rank 2"]),
  "integer logits": (_L, (2, 6, 5), np.int32, {"logits_dtype": np.int32}, ["logits", "int32"]),
  "empty dimension": ((2, 0, 5, 3), (2, 0, 5), np.int32, {}, ["logits", "(2, 0, 5, 3)"]),
  "ignore_index with dense labels": (
    _L,
    _L,
    np.float32,
    {"ignore_index": 255},
    ["ignore_index=255", "dense", "(2, 6, 5, 3)"],
  ),
  "bad ignore_index": (_L, (2, 6, 5), np.int32, {"ignore_index": 2.5}, ["ignore_index", "2.5"]),
  "bad from_logits": (_L, (2, 6, 5), np.int32, {"from_logits": "no"}, ["from_logits", "'no'"]),
  "bad reduction": (_L, (2, 6, 5), np.int32, {"reduction": "avg"}, ["reduction", "'avg'"]),
  "bad per_image": (_L, (2, 6, 5), np.int32, {"per_image": "yes"}, ["per_image", "'yes'"]),
}
BAD_PARAMS = [
  (n, case) for n in NAMES for case in BAD_INPUTS if case != "bad per_image" or n in REGION
]


@pytest.mark.parametrize("name, case", BAD_PARAMS)
def test_bad_input_raises_naming_argument_and_shapes(name, case):
  lshape, yshape, ydtype, extra, expected = BAD_INPUTS[case]
  kw = _opts()
  if "mask" in extra:
    kw["mask"] = jax.ShapeDtypeStruct(extra["mask"], jnp.float32)
  kw.update({k: v for k, v in extra.items() if k != "mask"})
  logits_dtype = kw.pop("logits_dtype", jnp.float32)
  fn = losses.lookup(name)
  logits = jax.ShapeDtypeStruct(lshape, logits_dtype)
  labels = jax.ShapeDtypeStruct(yshape, ydtype)
  mask = kw.pop("mask", None)
  with pytest.raises((ValueError, TypeError)) as e:
    jax.eval_shape(lambda x, y, m: fn(x, y, mask=m, **kw), logits, labels, mask)
  msg = str(e.value)
  for s in expected:
    assert s in msg, f"{name}/{case}: {s!r} not in error message: {msg}"


# ---------------------------------------------------------------- non-finite logits, checked mode
@functools.cache
def _nan_programs(name):
  """``(vmapped plain loss, checked loss)``, both jitted, with the mask as an argument."""
  fn = losses.get(name)
  plain = jax.jit(jax.vmap(lambda x, y, m: fn(x, y, mask=m), in_axes=(0, None, None)))
  checked = losses.checked(fn)
  return plain, jax.jit(lambda x, y, m: checked(x, y, mask=m))


@pytest.mark.parametrize("name", NAMES)
def test_nan_logits_give_nan_and_checked_mode_raises(name):
  # A user's loop watching the loss must see NaN, never the optimum (dice and tversky gave 0.0).
  x, y, m = _case(shape=(2, 8, 8, 3), seed=12)
  one = x.copy()
  one[0, 1, 2, 0] = np.nan
  plain, checked = _nan_programs(name)
  values = np.asarray(plain(np.stack([x, one, np.full_like(x, np.nan)]), y, m))
  assert np.isfinite(values[0]), values
  assert np.isnan(values[1]) and np.isnan(values[2]), f"{name}: NaN logits gave {values[1:]}"
  # Checked: same value on valid inputs, an error naming the value and range otherwise.
  _close(checked(x, y, m), values[0], rtol=1e-6)
  bad = y.copy()
  bad[1, 0, :2] = 255
  negative = m.copy()
  negative[0, 0, 0] = -1.0
  cases = {
    "logits hold nan, valid values are finite (1 of 384 entries are not)": (one, y, m),
    "labels hold 255, valid range [0, 3) (ignore_index=None; 2 of 128 pixels": (x, bad, m),
    "mask holds -1.0, valid weights are finite and >= 0 (1 of 128 pixels": (x, y, negative),
  }
  for message, args in cases.items():
    with pytest.raises(jax.errors.JaxRuntimeError, match=re.escape(message)):
      checked(*args).block_until_ready()
