"""Data parallelism: 8 devices train exactly like 1 device (the shard_map gradient trap)."""

import importlib.util
import os
import pathlib

import jax
import numpy as np
import pytest

from seg_jax import data as seg_data
from seg_jax import train
from seg_jax.training.checkpoint import Checkpointer
from seg_jax.training.outputs import read_metrics

ROOT = pathlib.Path(__file__).resolve().parent.parent


def runlocal(data_dir, **train_overrides):
  import sys

  if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
  spec = importlib.util.spec_from_file_location("_runlocal", ROOT / "configs" / "runlocal.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data.data_dir = str(data_dir)
  for key, value in train_overrides.items():
    config.train[key] = value
  return config


def final_params(config, workdir, step):
  ds = seg_data.load(config.data)
  model = train.build_model(config, ds.num_classes, (*ds.spatial_shape, ds.in_channels))
  tx, _ = train.make_optimizer(config.train)
  mesh = train.make_mesh(jax.devices()[:1])
  target = train.abstract_state(model, tx, mesh)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=10)
  state = ckpt.restore(target, step)
  ckpt.close()
  return jax.tree.map(np.asarray, state.params)


@pytest.mark.slow
@pytest.mark.parametrize(
  "norm, deep_supervision",
  [("group", False), ("batch", True)],
  ids=["groupnorm", "batchnorm-deep-supervision"],
)
def test_eight_devices_match_one_device(tmp_path, norm, deep_supervision):
  """Plain SGD (no Adam normalisation, no clipping, so a gradient scaled by the device count
  would show in every number): per-step losses, gradient norms, the final parameters and the
  validation metrics agree between an 8-device and a 1-device mesh (tolerance 1e-4). With
  batch norm the statistics are those of the global batch (``axis_name='data'``), so they must
  agree too; deep supervision adds the coarser heads to the loss."""
  assert len(jax.devices()) == 8
  config = runlocal(
    tmp_path / "tfds",
    steps=4,
    optimizer="sgd",
    momentum=0.9,
    learning_rate=0.5,
    warmup_steps=0,
    schedule="constant",
    grad_clip_norm=0.0,
    weight_decay=0.0,
    log_every=1,
    eval_every=0,
    checkpoint_every=0,
    test_at_end=False,
    num_plot_examples=0,
  )
  config.model.norm = norm
  config.model.deep_supervision = deep_supervision
  runs = {}
  for n in (8, 1):
    # The 8-device run checks its first 2 steps' inputs (losses.checked), the other does not: the
    # checked step computes the same update as the plain one.
    config.train.check_inputs_steps = 2 if n == 8 else 0
    workdir = str(tmp_path / f"devices{n}")
    mesh = train.make_mesh(jax.devices()[:n])
    final = train.train_and_evaluate(config, workdir, mesh=mesh)
    records = [r for r in read_metrics(workdir) if r["split"] == "train"]
    runs[n] = (final, records, final_params(config, workdir, 4))

  (final8, rec8, params8), (final1, rec1, params1) = runs[8], runs[1]
  assert [r["step"] for r in rec8] == [1, 2, 3, 4]
  for r8, r1 in zip(rec8, rec1, strict=True):
    np.testing.assert_allclose(r8["loss"], r1["loss"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(r8["grad_norm"], r1["grad_norm"], rtol=1e-4, atol=1e-6)
  # The run is not trivial: the loss moved.
  assert abs(rec8[-1]["loss"] - rec8[0]["loss"]) > 1e-3
  for a, b in zip(jax.tree.leaves(params8), jax.tree.leaves(params1), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
  assert final8["dice_mean"] == pytest.approx(final1["dice_mean"], abs=1e-3)
