"""The NNX U-Net has the former Linen U-Net's topology: the same variables (names, shapes,
counts) and, with the Linen variables copied into it, the same outputs and batch-norm updates.

The Linen U-Net (``benchmarks/linen_unet.py``, the model the NNX one replaced, kept only as this
reference and for ``benchmarks/train.py --api=linen,nnx``); equal outputs for every norm, 1-3
spatial dims, deep supervision and bfloat16 compute show the layers and their order are the same.
"""

import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seg_jax.models import UNet

_SPEC = importlib.util.spec_from_file_location(
  "linen_unet", pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "linen_unet.py"
)
_LINEN = sys.modules.setdefault("linen_unet", importlib.util.module_from_spec(_SPEC))
_SPEC.loader.exec_module(_LINEN)  # Linen modules are dataclasses: their module must be known.
LinenUNet = _LINEN.UNet

CASES = [
  (dict(num_classes=2, features=64, depth=5, norm=None), (1, 16, 16, 1)),  # classic, shapes only
  (dict(num_classes=3, features=4, depth=3, norm="group", num_groups=2, deep_supervision=True),
   (2, 8, 12, 2)),
  (dict(num_classes=2, features=4, depth=2, norm="instance"), (2, 16, 1)),
  (dict(num_classes=1, features=2, depth=3, norm="batch"), (4, 4, 8, 4, 3)),
  (dict(num_classes=2, features=4, depth=2, norm="group", dtype=jnp.bfloat16), (2, 8, 8, 1)),
  (dict(num_classes=2, features=3, depth=1, norm="none", deep_supervision=True), (1, 6, 5, 2)),
]  # fmt: skip
IDS = ["classic", "2d-group-ds", "1d-instance", "3d-batch", "2d-bf16", "2d-depth1-none"]


def _nnx_model(kwargs, shape, seed=0):
  return UNet(shape[-1], spatial_dims=len(shape) - 2, rngs=nnx.Rngs(seed), **kwargs)


def _random_variables(shapes, seed=0):
  """Random values (NumPy) of the Linen variables' structure; var > 0 for batch norm."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    value = rng.standard_normal(leaf.shape) * 0.5
    if path[-1].key == "var":
      value = 0.5 + np.abs(value)
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.mark.parametrize("kwargs, shape", CASES, ids=IDS)
def test_nnx_and_linen_unets_have_the_same_variables_and_outputs(kwargs, shape):
  linen = LinenUNet(**kwargs)
  shapes = jax.eval_shape(
    lambda x: linen.init(jax.random.key(0), x, train=False), jnp.zeros(shape, jnp.float32)
  )
  abstract = nnx.eval_shape(lambda: _nnx_model(kwargs, shape))
  graphdef, params, batch_stats = nnx.split(abstract, nnx.Param, nnx.BatchStat)
  as_struct = lambda tree: jax.tree.map(lambda a: (a.shape, a.dtype), tree)  # noqa: E731
  assert as_struct(nnx.to_pure_dict(params)) == as_struct(shapes["params"])
  assert as_struct(nnx.to_pure_dict(batch_stats)) == as_struct(shapes.get("batch_stats", {}))
  n_linen = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"]))
  assert n_linen == sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
  if kwargs["features"] == 64:
    assert n_linen == 31_030_658  # the classic configuration (tests/test_unet.py)
    return

  variables = _random_variables(shapes)
  x = jnp.asarray(np.random.default_rng(1).standard_normal(shape), jnp.float32)
  batch_norm = "batch_stats" in variables

  @jax.jit
  def run(variables, x):
    stats = variables.get("batch_stats", {})
    model = nnx.merge(graphdef, variables["params"], stats)
    outs = {"eval": (model(x, train=False), linen.apply(variables, x, train=False))}
    if batch_norm:
      y_nnx = model(x, train=True)  # updates the model's BatchStat variables in place
      y_linen, upd = linen.apply(variables, x, train=True, mutable=["batch_stats"])
      outs["train"] = (y_nnx, y_linen)
      outs["stats"] = (nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)), upd["batch_stats"])
    return outs

  outs = run(variables, x)
  exact = kwargs.get("dtype") is None
  tol = dict(rtol=1e-5, atol=1e-5) if exact else dict(rtol=2e-2, atol=2e-2)
  for name, (a, b) in outs.items():
    assert jax.tree.structure(a) == jax.tree.structure(b), name
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
      np.testing.assert_allclose(u, v, **tol)
  if batch_norm:  # the statistics moved: the comparison is not of two unchanged copies
    before = variables["batch_stats"]["down0"]["norm0"]["mean"]
    after = outs["stats"][0]["down0"]["norm0"]["mean"]
    assert np.abs(np.asarray(after) - np.asarray(before)).max() > 1e-3
