"""Tests of seg_jax.models.UNet: topology (parameter counts), shapes, dtypes, norms, errors.

Parameter counts are checked against a formula written here from the paper's layer list, and the
classic configuration against the 31,030,658 computed by hand below. Models are tiny (features
2-4, depth 2-3) so each test compiles once or not at all (``nnx.eval_shape`` only traces). The
models are used in NNX's functional form, as the trainer does: ``nnx.split`` into a graph
definition and variables (nested dicts), ``nnx.merge`` inside the jitted function.
"""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from seg_jax.models import UNet

# RBG keys compile far faster than threefry on CPU; the values do not matter here.
KEY = jax.random.key(0, impl="rbg")


def build(shape, key=KEY, **kwargs):
  """The U-Net of ``kwargs`` for inputs of ``shape``, abstract (``nnx.eval_shape``)."""
  return nnx.eval_shape(
    lambda: UNet(shape[-1], spatial_dims=len(shape) - 2, rngs=nnx.Rngs(key), **kwargs)
  )


def split(model):
  """``(graphdef, {'params': ..., 'batch_stats': ...})``, the variables as nested dicts."""
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return graphdef, {
    "params": nnx.to_pure_dict(params),
    "batch_stats": nnx.to_pure_dict(batch_stats),
  }


def apply(graphdef, variables, x, *, train=False):
  """Outputs of the model (and, with ``train``, the new batch statistics); traceable."""
  model = nnx.merge(graphdef, variables["params"], variables["batch_stats"])
  out = model(x, train=train)
  if train:
    return out, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
  return out


def initialised(shape, **kwargs):
  """``(graphdef, variables)`` of a model initialised by its own initialisers, jitted."""
  graphdef, _ = split(build(shape, **kwargs))
  init = jax.jit(
    lambda: split(UNet(shape[-1], spatial_dims=len(shape) - 2, rngs=nnx.Rngs(KEY), **kwargs))[1]
  )
  return graphdef, init()


def numpy_variables(model, seed=0):
  """Random variables of the right structure, drawn in NumPy (saves compiling ``init``).

  Kernels ~ N(0, 2 / fan_in), biases and norm offsets ~ N(0, 0.1^2), norm scales ~ 1 + N(0,
  0.1^2), batch norm running mean 0 and variance 1.
  """
  rng = np.random.default_rng(seed)
  shapes = init_shapes(model)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      value = rng.standard_normal(leaf.shape) * np.sqrt(2 / fan_in)
    elif name == "scale":
      value = 1 + 0.1 * rng.standard_normal(leaf.shape)
    elif name == "bias":
      value = 0.1 * rng.standard_normal(leaf.shape)
    else:  # running statistics
      value = np.full(leaf.shape, 1.0 if name == "var" else 0.0)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def init_shapes(model):
  """Variable shapes of the abstract ``model`` (tracing only, no compile)."""
  return split(model)[1]


def count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def expected_params(in_channels, num_classes, features, depth, spatial_dims, norm):
  """Parameter count of the U-Net from its layer list (Ronneberger et al. 2015, Fig. 1).

  A k^d convolution from cin to cout channels has k^d * cin * cout weights, plus cout biases
  when no normalisation follows it; a normalisation layer adds a scale and a bias per channel.
  """
  k3, k2 = 3**spatial_dims, 2**spatial_dims

  def conv3(cin, cout):
    if norm is None:
      return k3 * cin * cout + cout
    return k3 * cin * cout + 2 * cout  # no conv bias; norm scale + bias

  widths = [features * 2**level for level in range(depth)]
  total, cin = 0, in_channels
  for w in widths:  # encoder blocks incl. bottleneck
    total += conv3(cin, w) + conv3(w, w)
    cin = w
  for level in reversed(range(depth - 1)):  # up-conv, then a block on the concatenation
    w = widths[level]
    total += k2 * widths[level + 1] * w + w
    total += conv3(2 * w, w) + conv3(w, w)
  return total + features * num_classes + num_classes  # 1x1 head


def test_classic_configuration_has_the_papers_parameter_count():
  # By hand, layer by layer (weights + biases), 2D, 1 input channel, 2 classes:
  # encoder   1->64: 640, 64->64: 36,928; 64->128: 73,856, 128->128: 147,584;
  #           128->256: 295,168, 256->256: 590,080; 256->512: 1,180,160, 512->512: 2,359,808;
  #           512->1024: 4,719,616, 1024->1024: 9,438,208                   sum 18,842,048
  # decoder   up 1024->512: 2,097,664, 1024->512: 4,719,104, 512->512: 2,359,808
  #           up 512->256: 524,544, 512->256: 1,179,904, 256->256: 590,080
  #           up 256->128: 131,200, 256->128: 295,040, 128->128: 147,584
  #           up 128->64: 32,832, 128->64: 73,792, 64->64: 36,928       sum 12,188,480
  # head      64->2: 130                                           total 31,030,658
  classic = build((1, 16, 16, 1), num_classes=2, features=64, depth=5, norm=None)
  variables = init_shapes(classic)
  assert variables["batch_stats"] == {}
  assert count(variables["params"]) == 31_030_658
  assert expected_params(1, 2, 64, 5, 2, None) == 31_030_658
  # With GroupNorm: conv biases dropped, 2 parameters per channel for each of the 18 norms.
  grouped = init_shapes(build((1, 16, 16, 1), num_classes=2, features=64, depth=5))
  assert count(grouped["params"]) == expected_params(1, 2, 64, 5, 2, "group")


@pytest.mark.parametrize(
  "kwargs, shape",
  [
    (dict(num_classes=3, features=4, depth=3, norm="instance"), (1, 8, 2)),
    (dict(num_classes=1, features=2, depth=4, norm="batch"), (1, 8, 8, 8, 3)),
    (dict(num_classes=5, features=3, depth=1, norm="none", num_groups=2), (1, 6, 5, 2)),
  ],
)
def test_parameter_count_in_1d_2d_3d(kwargs, shape):
  variables = init_shapes(build(shape, **kwargs))
  norm = None if kwargs["norm"] == "none" else kwargs["norm"]
  want = expected_params(
    shape[-1], kwargs["num_classes"], kwargs["features"], kwargs["depth"], len(shape) - 2, norm
  )
  assert count(variables["params"]) == want
  if norm == "batch":  # running mean and variance per channel of each norm layer
    assert count(variables["batch_stats"]) == 2 * sum(
      2 * kwargs["features"] * 2**level * (2 if level < kwargs["depth"] - 1 else 1)
      for level in range(kwargs["depth"])
    )


def test_kernel_shapes_follow_the_input_rank():
  variables = init_shapes(build((1, 4, 4, 4, 1), num_classes=2, features=2, depth=2))["params"]
  assert variables["down0"]["conv0"]["kernel"].shape == (3, 3, 3, 1, 2)
  assert variables["down1"]["conv1"]["kernel"].shape == (3, 3, 3, 4, 4)
  assert variables["upconv0"]["kernel"].shape == (2, 2, 2, 4, 2)
  assert variables["up0"]["conv0"]["kernel"].shape == (3, 3, 3, 4, 2)  # skip (2) + up (2)
  assert variables["head"]["kernel"].shape == (1, 1, 1, 2, 2)


@pytest.mark.parametrize(
  "shape, norm",
  [((3, 16, 2), "instance"), ((3, 8, 12, 1), "group"), ((2, 4, 8, 4, 1), "batch")],
  ids=["1d", "2d", "3d"],
)
def test_forward_shapes_and_per_example_independence(shape, norm):
  kwargs = dict(num_classes=3, features=4, depth=3, norm=norm, num_groups=2)
  x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
  x2 = x.copy()
  x2[1:] = 10 * x2[1:] + 3  # change every example but the first
  both = np.concatenate([x, x2])
  if len(shape) == 4:  # once with the real initialisers
    graphdef, variables = initialised(shape, **kwargs)
  else:
    model = build(shape, **kwargs)
    graphdef, variables = split(model)[0], numpy_variables(model)
  y = jax.jit(lambda v, x: apply(graphdef, v, x))(variables, both)
  y, y2 = y[: len(x)], y[len(x) :]
  assert y.shape == (*shape[:-1], 3) and y.dtype == jnp.float32
  assert np.all(np.isfinite(y))
  # group / instance norm, and batch norm at inference, treat each example on its own.
  np.testing.assert_allclose(y2[0], y[0], rtol=1e-5, atol=1e-5)
  assert not np.allclose(y2[1:], y[1:], atol=1e-3)


def test_deep_supervision_returns_finest_first():
  kw = dict(num_classes=2, features=2, depth=4, num_groups=1)
  model = build((2, 16, 24, 1), deep_supervision=True, **kw)
  graphdef, shapes = split(model)
  outputs = jax.eval_shape(lambda v, x: apply(graphdef, v, x), shapes, jnp.zeros((2, 16, 24, 1)))
  assert [o.shape for o in outputs] == [(2, 16, 24, 2), (2, 8, 12, 2), (2, 4, 6, 2)]
  assert all(o.dtype == jnp.float32 for o in outputs)
  assert {"head", "ds_head1", "ds_head2"} <= set(shapes["params"])
  # The main output is the same head with or without deep supervision.
  plain = split(build((1, 8, 8, 1), **kw))[0]
  x = np.random.default_rng(1).standard_normal((1, 8, 8, 1)).astype(np.float32)
  v = numpy_variables(model)
  main_only = {
    "params": {k: p for k, p in v["params"].items() if not k.startswith("ds_")},
    "batch_stats": {},
  }

  @jax.jit
  def run(v, main_only, x):
    return apply(graphdef, v, x), apply(plain, main_only, x)

  (main, half, quarter), single = run(v, main_only, x)
  np.testing.assert_array_equal(main, single)
  assert half.shape == (1, 4, 4, 2) and quarter.shape == (1, 2, 2, 2)
  # The extra heads are 1x1 convolutions of the decoder features: nonzero, distinct outputs.
  assert np.abs(np.asarray(half)).max() > 0 and np.abs(np.asarray(quarter)).max() > 0
  depth1, shapes1 = split(build((1, 5, 1), **{**kw, "depth": 1}, deep_supervision=True))
  out1 = jax.eval_shape(lambda v, x: apply(depth1, v, x), shapes1, jnp.zeros((1, 5, 1)))
  assert [o.shape for o in out1] == [(1, 5, 2)]


def _input_dtypes(jaxpr, primitive):
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == primitive:
      found.append(tuple(str(v.aval.dtype) for v in eqn.invars[:2]))
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      found += _input_dtypes(sub, primitive)
  return found


def test_bfloat16_compute_gives_float32_logits():
  kw = dict(num_classes=2, features=4, depth=2, num_groups=2)
  x = np.random.default_rng(2).standard_normal((2, 16, 1)).astype(np.float32)
  fast = split(build(x.shape, dtype=jnp.bfloat16, **kw))[0]
  exact_model = build(x.shape, **kw)
  exact = split(exact_model)[0]
  variables = numpy_variables(exact_model)

  @jax.jit
  def run(v, x):
    return apply(fast, v, x), apply(exact, v, x)

  y_fast, y_exact = run(variables, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  assert y_fast.dtype == jnp.float32 and y_exact.dtype == jnp.float32
  np.testing.assert_allclose(y_fast, y_exact, atol=0.1 * float(np.abs(y_exact).max()))
  assert not np.array_equal(y_fast, y_exact)  # the bfloat16 path really ran
  # Every 3x3 convolution (2 per block, 3 blocks at depth 2) and the up-convolution (one matrix
  # product, see seg_jax.models.layers.UpConv) runs in bfloat16; only the 1x1 head is float32.
  jaxpr = jax.make_jaxpr(lambda v, x: apply(fast, v, x))(variables, x).jaxpr
  bf16, f32 = ("bfloat16",) * 2, ("float32",) * 2
  assert _input_dtypes(jaxpr, "conv_general_dilated") == [bf16] * 6 + [f32]
  assert _input_dtypes(jaxpr, "dot_general") == [bf16]
  # bfloat16 parameters are possible too.
  shapes = init_shapes(build((1, 8, 1), param_dtype=jnp.bfloat16, **kw))
  assert {leaf.dtype for leaf in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.bfloat16)}


def test_batch_norm_under_shard_map_uses_global_batch_statistics():
  devices = jax.devices()
  assert len(devices) == 8
  mesh = Mesh(np.array(devices), ("data",))
  kw = dict(num_classes=2, features=2, depth=2, norm="batch")
  rng = np.random.default_rng(3)
  # Examples with very different scales: per-device statistics would be far from global ones.
  scale = np.arange(1, 9, dtype=np.float32).reshape(8, 1, 1, 1)
  x = (scale * rng.standard_normal((8, 8, 8, 1)) + scale).astype(np.float32)
  local = split(build(x.shape, **kw))[0]
  sharded_model = build(x.shape, axis_name="data", **kw)  # construction needs no axis
  sharded = split(sharded_model)[0]
  variables = numpy_variables(sharded_model)
  assert count(variables["batch_stats"]) > 0

  def step(graphdef):
    def f(v, x):
      out, batch_stats = apply(graphdef, v, x, train=True)
      return out, {"batch_stats": batch_stats}

    return f

  y_one, upd_one = jax.jit(step(local))(variables, x)
  y_many, upd_many = jax.jit(
    jax.shard_map(step(sharded), mesh=mesh, in_specs=(P(), P("data")), out_specs=(P("data"), P()))
  )(variables, x)
  np.testing.assert_allclose(y_many, y_one, rtol=1e-4, atol=1e-4)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
    upd_many["batch_stats"],
    upd_one["batch_stats"],
  )
  # The statistics moved (momentum 0.9 towards the batch values): the check is not vacuous.
  mean0 = upd_one["batch_stats"]["down0"]["norm0"]["mean"]
  assert np.abs(np.asarray(mean0)).max() > 1e-3


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(norm="layer"), r"unknown norm='layer'"),
    (dict(features=12, num_groups=8), r"12 channels.*num_groups=8"),
    (dict(depth=0), r"depth must be a positive int"),
    (dict(features=2.5), r"features must be a positive int"),
    (dict(in_features=0), r"in_features must be a positive int"),
    (dict(spatial_dims=4), r"spatial_dims must be 1, 2 or 3, got 4"),
  ],
)
def test_bad_configurations_raise_clear_errors(kwargs, match):
  kwargs = {"in_features": 1, "num_classes": 2, "features": 4, "depth": 2, **kwargs}
  with pytest.raises(ValueError, match=match):
    nnx.eval_shape(lambda: UNet(**kwargs, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize(
  "shape, match",
  [
    ((8, 8), r"spatial_dims=2 \(rank 4\) and in_features=1 .*\(8, 8\) \(rank 2\)"),
    ((1, 8, 8, 8, 1), r"rank 4.*\(1, 8, 8, 8, 1\) \(rank 5\)"),
    ((1, 8, 8, 3), r"in_features=1 channels, got shape \(1, 8, 8, 3\)"),
    ((1, 16, 12, 1), r"2\*\*\(depth - 1\) = 8.*depth=4.*\(1, 16, 12, 1\)"),
  ],
)
def test_bad_inputs_raise_clear_errors(shape, match):
  graphdef, shapes = split(build((1, 8, 8, 1), num_classes=2, features=2, depth=4))
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(lambda v, x: apply(graphdef, v, x), shapes, jnp.zeros(shape))
