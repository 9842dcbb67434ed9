"""synthetic_shapes: builds of every config, determinism by seed, class fractions, difficulty."""

import pickle

import numpy as np
import pytest
from scipy import ndimage

from seg_jax.data import synthetic_shapes

SMALL = {"num_train": 24, "num_validation": 6, "num_test": 6}


def _arrays(source):
  """id -> (image, mask) of every record of a tfds data source."""
  out = {}
  for i in range(len(source)):
    rec = source[i]
    out[rec["id"].decode()] = (rec["image"], rec["segmentation_mask"][..., 0])
  return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """Every config built small (32 px) into one temporary data dir: kind -> SegDataset."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  return {
    kind: synthetic_shapes.load(kind, data_dir=data_dir, image_size=32, **SMALL)
    for kind in synthetic_shapes.KINDS
  }


@pytest.mark.parametrize("kind", synthetic_shapes.KINDS)
def test_build_each_config(built, kind):
  ds = built[kind]
  assert ds.num_classes == len(synthetic_shapes.CLASS_NAMES[kind]) == len(ds.class_names)
  assert ds.in_channels == 3 and ds.spatial_shape == (32, 32)
  seen = np.zeros(ds.num_classes, np.int64)
  for split in ("train", "validation", "test"):
    source = ds.source(split)
    assert len(source) == SMALL[f"num_{split}"]
    arrays = _arrays(source)
    assert sorted(arrays) == sorted(f"{split}/{i}" for i in range(len(source)))
    for image, mask in arrays.values():
      assert image.shape == (32, 32, 3) and image.dtype == np.uint8
      assert mask.shape == (32, 32) and mask.dtype == np.uint8
      assert mask.max() < ds.num_classes
      assert (mask > 0).any(), "every example has some foreground"
      seen += np.bincount(mask.ravel(), minlength=ds.num_classes)
  assert (seen > 0).all(), f"every class occurs in {kind}: {seen}"


@pytest.mark.parametrize("kind", synthetic_shapes.KINDS)
def test_records_are_the_generator_output(built, kind):
  """Stored PNGs decode to exactly what generate_example returns (lossless, by id)."""
  arrays = _arrays(built[kind].source("validation"))
  for ident, (image, mask) in arrays.items():
    split, index = ident.split("/")
    ref_image, ref_mask = synthetic_shapes.generate_example(kind, 32, 0, split, int(index))
    np.testing.assert_array_equal(image, ref_image)
    np.testing.assert_array_equal(mask, ref_mask)


def test_rebuild_is_identical_and_seed_changes_data(built, tmp_path):
  """A second build into another dir equals the first; another seed gives other images."""
  again = synthetic_shapes.load("balanced", data_dir=str(tmp_path), image_size=32, **SMALL)
  first = _arrays(built["balanced"].source("train"))
  second = _arrays(again.source("train"))
  assert first.keys() == second.keys()
  for key in first:
    np.testing.assert_array_equal(first[key][0], second[key][0])
    np.testing.assert_array_equal(first[key][1], second[key][1])
  other = synthetic_shapes.generate_example("balanced", 32, 1, "train", 0)
  same = synthetic_shapes.generate_example("balanced", 32, 0, "train", 0)
  assert not np.array_equal(other[1], same[1])
  # Splits and indices draw independent examples.
  val = synthetic_shapes.generate_example("balanced", 32, 0, "validation", 0)
  assert not np.array_equal(val[0], same[0])


def test_imbalanced_foreground_fraction_on_built_data(tmp_path):
  """The default-size imbalanced data has 1-3 % foreground pixels over the split."""
  ds = synthetic_shapes.load(
    "imbalanced", data_dir=str(tmp_path), num_train=200, num_validation=1, num_test=1
  )
  masks = np.stack([m for _, m in _arrays(ds.source("train")).values()])
  assert masks.shape == (200, 64, 64)
  fraction = (masks > 0).mean()
  assert 0.01 <= fraction <= 0.03, fraction
  assert (masks > 0).any(axis=(1, 2)).all()


def _fraction_and_opening(kind, n=60, size=64):
  masks = np.stack(
    [synthetic_shapes.generate_example(kind, size, 0, "train", i)[1] for i in range(n)]
  )
  fg = masks > 0
  opened = np.stack([ndimage.binary_opening(m, structure=np.ones((5, 5))) for m in fg])
  return fg.mean(), opened.sum() / fg.sum()


def test_thin_is_thin_and_balanced_is_compact():
  """thin: a 5x5 opening removes almost all foreground (structures < 5 px wide); balanced
  objects survive it, and the balanced foreground is a healthy share of the pixels."""
  thin_fraction, thin_kept = _fraction_and_opening("thin")
  bal_fraction, bal_kept = _fraction_and_opening("balanced")
  assert 0.02 <= thin_fraction <= 0.15 and thin_kept < 0.1, (thin_fraction, thin_kept)
  assert 0.12 <= bal_fraction <= 0.35 and bal_kept > 0.7, (bal_fraction, bal_kept)


def test_intensity_threshold_does_not_solve_balanced():
  """No global threshold on grey level or on one channel reaches a Dice of 0.6."""
  pairs = [synthetic_shapes.generate_example("balanced", 64, 0, "validation", i) for i in range(50)]
  images = np.stack([p[0] for p in pairs]).astype(np.float64)
  fg = np.stack([p[1] for p in pairs]) > 0
  best = 0.0
  for feature in [images.mean(-1)] + [images[..., c] for c in range(3)]:
    for t in np.linspace(5, 250, 36):
      for pred in (feature > t, feature < t):
        best = max(best, 2 * (pred & fg).sum() / (pred.sum() + fg.sum()))
  assert best < 0.6, best


def test_multiclass_classes_have_their_shapes():
  """Class 3 (curve) is thin, classes 1-2 (ellipse, polygon) are compact blobs."""
  masks = np.stack(
    [synthetic_shapes.generate_example("multiclass", 64, 0, "train", i)[1] for i in range(60)]
  )
  for label, compact in ((1, True), (2, True), (3, False)):
    fg = masks == label
    opened = np.stack([ndimage.binary_opening(m, structure=np.ones((5, 5))) for m in fg])
    kept = opened.sum() / fg.sum()
    assert (kept > 0.5) if compact else (kept < 0.1), (label, kept)


def test_make_config_and_errors():
  default = synthetic_shapes.make_config()
  assert default is synthetic_shapes.SyntheticShapes.builder_configs["balanced"]
  assert (default.image_size, default.num_train, default.num_validation, default.num_test) == (
    64,
    1000,
    200,
    200,
  )
  custom = synthetic_shapes.make_config("thin", image_size=32, num_train=5, seed=3)
  assert custom.name == "thin_s32_n5.200.200_seed3"
  # Registered configs unpickle to the registered instance (grain workers need this).
  assert pickle.loads(pickle.dumps(default)) is default
  assert pickle.loads(pickle.dumps(custom)).name == custom.name
  with pytest.raises(ValueError, match=r"unknown config 'blobs'.*'balanced'"):
    synthetic_shapes.make_config("blobs")
  with pytest.raises(ValueError, match="image_size must be >= 16"):
    synthetic_shapes.make_config(image_size=8)
  with pytest.raises(ValueError, match="num_validation=0"):
    synthetic_shapes.make_config(num_validation=0)
