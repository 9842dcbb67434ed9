"""The README's path for Linen users: the NNX U-Net wrapped with ``nnx.bridge.to_linen`` inside a
Linen module gives the NNX model's variables (``params`` and ``batch_stats`` collections, NNX
attribute paths) and the NNX model's outputs, batch-norm updates and gradients. The README's
model examples run as written."""

import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from seg_jax.models import UNet

KW = dict(features=4, depth=2, norm="batch")


class LinenSegmenter(nn.Module):
  """A Linen model holding the U-Net, as in the README."""

  @nn.compact
  def __call__(self, x, *, train: bool):
    unet = nnx.bridge.to_linen(UNet, x.shape[-1], 2, spatial_dims=x.ndim - 2, **KW, name="unet")
    return unet(x, train=train)


def test_unet_wrapped_for_linen_matches_the_nnx_model():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 8, 8, 1)), jnp.float32)
  labels = jnp.asarray(np.random.default_rng(1).integers(0, 2, (4, 8, 8)))
  linen = LinenSegmenter()
  variables = jax.jit(lambda x: linen.init(jax.random.key(0), x, train=False))(x)
  assert set(variables) == {"params", "batch_stats"}
  params, stats = variables["params"]["unet"], variables["batch_stats"]["unet"]
  graphdef, p_shapes, s_shapes = nnx.split(
    nnx.eval_shape(lambda: UNet(1, 2, **KW, rngs=nnx.Rngs(0))), nnx.Param, nnx.BatchStat
  )
  shape_of = lambda tree: jax.tree.map(jnp.shape, tree)  # noqa: E731
  assert shape_of(params) == shape_of(nnx.to_pure_dict(p_shapes))
  assert shape_of(stats) == shape_of(nnx.to_pure_dict(s_shapes))

  def loss(logits):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1))

  @jax.jit
  def run(params, stats):
    def linen_loss(p):
      y, upd = linen.apply(
        {"params": {"unet": p}, "batch_stats": {"unet": stats}}, x, train=True,
        mutable=["batch_stats"],
      )  # fmt: skip
      return loss(y), (y, upd["batch_stats"]["unet"])

    def nnx_loss(p):
      model = nnx.merge(graphdef, p, stats)
      y = model(x, train=True)
      return loss(y), (y, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))

    evals = (
      linen.apply({"params": {"unet": params}, "batch_stats": {"unet": stats}}, x, train=False),
      nnx.merge(graphdef, params, stats)(x, train=False),
    )
    grad = lambda f: jax.grad(f, has_aux=True)(params)  # noqa: E731
    return evals, grad(linen_loss), grad(nnx_loss)

  (y_linen, y_nnx), (g_linen, aux_linen), (g_nnx, aux_nnx) = run(params, stats)
  np.testing.assert_allclose(y_linen, y_nnx, rtol=1e-6, atol=1e-6)
  for a, b in zip(
    jax.tree.leaves((g_linen, aux_linen)), jax.tree.leaves((g_nnx, aux_nnx)), strict=True
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert jax.tree.structure(g_linen) == jax.tree.structure(g_nnx)
  assert float(optax.tree.norm(g_linen)) > 0  # a real gradient, not zeros
  assert not np.allclose(aux_linen[1]["down0"]["norm0"]["mean"], stats["down0"]["norm0"]["mean"])


def test_readme_model_examples_run():
  readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
  blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "seg_jax.models" in b]
  assert len(blocks) == 2  # the NNX example and the Linen wrapper
  nnx_ns, linen_ns = {}, {}
  exec(blocks[0], nnx_ns)  # noqa: S102
  exec(blocks[1], linen_ns)  # noqa: S102
  assert nnx_ns["logits"].shape == (2, 64, 64, 3) and np.isfinite(float(nnx_ns["loss"]))
  assert jax.tree.structure(nnx_ns["grads"]) == jax.tree.structure(nnx_ns["params"])
  assert set(linen_ns["variables"]) == {"params"} and set(linen_ns["variables"]["params"]) == {
    "unet"
  }
  assert linen_ns["logits"].shape == (2, 32, 32, 2)
