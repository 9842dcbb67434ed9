"""Per-example loss targets: made by the pipeline on the host, passed by the trainer.

The pipeline's targets equal the targets of the (augmented) labels in the same batch, the host
distance maps equal the in-jit ones, and a train step gets the same loss from precomputed
distance maps as from the in-jit ones, and uses a precomputed skeleton when the batch has one.
"""

import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seg_jax import data as seg_data
from seg_jax import losses, train
from seg_jax.data import targets as host
from seg_jax.training.state import apply_model
from seg_jax.training.steps import build_loss, make_train_step

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

TARGETS = {"skeleton": "tubed_skeleton", "sdm": "signed_distance", "bdm": "boundary_distance"}


def _config(data_dir, loss, **options):
  spec = importlib.util.spec_from_file_location("_runlocal", ROOT / "configs" / "runlocal.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data.data_dir = str(data_dir)
  config.data.config = "thin"
  config.loss.name = loss
  for k, v in options.items():
    config.loss.options[k] = v
  return config


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds")
  return seg_data.load(_config(path, "dice").data), path


def _batch(dataset, targets, channels, batch_size=4):
  it = seg_data.train_batches(
    dataset, batch_size=batch_size, seed=3, targets=targets, channels=channels
  )
  return next(it)


def test_pipeline_targets_are_those_of_the_augmented_labels(ds):
  dataset, _ = ds
  plain = _batch(dataset, None, None)
  batch = _batch(dataset, TARGETS, 1)
  # The targets do not change the stream: same (augmented) images and labels.
  np.testing.assert_array_equal(batch["image"], plain["image"])
  np.testing.assert_array_equal(batch["label"], plain["label"])
  assert set(batch) == {"image", "label", *TARGETS}
  labels = batch["label"]
  assert labels.any()
  for i, y in enumerate(labels):
    np.testing.assert_array_equal(batch["skeleton"][i], host.tubed_skeleton(y, num_classes=2))
  one = jnp.asarray(labels == 1, jnp.float32)[..., None]
  np.testing.assert_allclose(batch["sdm"], losses.signed_distance_map(one), atol=1e-5)
  np.testing.assert_allclose(batch["bdm"], losses.boundary_distance_map(one), atol=1e-5)
  assert batch["skeleton"].dtype == np.int32 and batch["sdm"].dtype == np.float32


def test_host_distance_maps_equal_the_jax_ones_multiclass_with_ignored_labels(rng):
  labels = rng.integers(0, 3, size=(3, 9, 11)).astype(np.int32)
  labels[0] = 0  # every class absent but the background (which fills the image): maps 0
  labels[1, 2:4, 3:6] = 255  # ignored: read as class 0, as the losses read it
  one_hot = jax.nn.one_hot(np.where(labels == 255, 0, labels), 3)
  for fn, jax_fn in [
    (host.signed_distance, losses.signed_distance_map),
    (host.boundary_distance, losses.boundary_distance_map),
  ]:
    got = np.stack([fn(y, num_classes=3, channels=3, ignore_index=255) for y in labels])
    np.testing.assert_allclose(got, jax_fn(one_hot), atol=1e-5)
  with pytest.raises(ValueError, match="unknown target kind"):
    host.compute({"x": "nope"}, labels[0], num_classes=3, channels=3)


def test_train_batches_target_errors(ds):
  dataset, _ = ds
  with pytest.raises(ValueError, match="targets need channels"):
    seg_data.train_batches(dataset, batch_size=2, seed=0, targets=TARGETS)
  with pytest.raises(ValueError, match="may not be named"):
    seg_data.train_batches(
      dataset, batch_size=2, seed=0, targets={"label": "signed_distance"}, channels=1
    )


def _first_step(config, batch):
  """``(loss of the first train step on batch, model outputs before the update)``, 1 device."""
  ds = seg_data.load(config.data)
  model = train.build_model(config, ds.num_classes, (*ds.spatial_shape, ds.in_channels))
  tx, schedule = train.make_optimizer(config.train)
  mesh = train.make_mesh(jax.devices()[:1])
  state = train.init_state(model, tx, mesh, 0)
  outputs, _ = apply_model(model, state, state.params, batch["image"], train=True)
  step = make_train_step(model, build_loss(config), tx, schedule, mesh)
  _, out = step(state, batch)
  return float(out["loss"]), outputs


def test_train_step_same_loss_with_precomputed_distance_maps(ds):
  dataset, path = ds
  config = _config(path, "dice_boundary", boundary_weight=1.0)
  targets = losses.targets("dice_boundary")
  assert build_loss(config).targets == targets == {"distance_maps": "signed_distance"}
  batch = _batch(dataset, targets, 1)
  plain = {k: batch[k] for k in ("image", "label")}
  with_maps, _ = _first_step(config, batch)
  assert np.isclose(with_maps, _first_step(config, plain)[0], rtol=1e-5, atol=1e-6)
  # The maps are used: other maps change the loss.
  wrong = {**batch, "distance_maps": batch["distance_maps"] + 5.0}
  assert not np.isclose(_first_step(config, wrong)[0], with_maps, rtol=1e-3)


def test_train_step_uses_the_precomputed_skeleton(ds):
  dataset, path = ds
  config = _config(path, "skeleton_recall")
  batch = _batch(dataset, losses.targets("skeleton_recall"), 1)
  assert batch["skeleton"].any()
  got, outputs = _first_step(config, batch)
  want = losses.skeleton_recall_loss(outputs, batch["label"], skeleton=batch["skeleton"])
  assert np.isclose(got, float(want), rtol=1e-5) and got > 0
  # The batch's skeleton is what the step uses: an empty one gives exactly 0 (recall s/s = 1).
  empty = {**batch, "skeleton": np.zeros_like(batch["skeleton"])}
  assert _first_step(config, empty)[0] == 0.0
