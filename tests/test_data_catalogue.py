"""Catalogue data sets through tfds.testing.mock_data (no network): label mapping, errors."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from seg_jax import data
from seg_jax.data import catalogue

SIZE = 16


def _pet_records(rng, n=5):
  """Consistent oxford_iiit_pet-like records: trimaps with values 1, 2, 3."""
  records = []
  for i in range(n):
    h, w = 12 + i, 20 - i
    mask = rng.integers(1, 4, (h, w, 1), dtype=np.uint8)
    records.append(
      {
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "segmentation_mask": mask,
        "file_name": f"pet_{i}.jpg",
        "label": 0,
        "species": 0,
      }
    )
  return records


def _mocked(records):
  splits_seen = []

  def as_data_source(self, split, **kwargs):
    del self, kwargs
    splits_seen.append(split)
    return records

  return tfds.testing.mock_data(as_data_source_fn=as_data_source), splits_seen


@pytest.mark.parametrize(
  "border, border_class, ignore",
  [("ignore", 255, 255), ("foreground", 1, None), ("background", 0, None)],
)
def test_pet_label_mapping(tmp_path, rng, border, border_class, ignore):
  records = _pet_records(rng)
  mock, splits_seen = _mocked(records)
  with mock:
    ds = catalogue.load("oxford_iiit_pet", data_dir=str(tmp_path), image_size=SIZE, border=border)
  assert splits_seen == ["train[:90%]", "train[90%:]", "test"]
  assert ds.splits == ("train", "validation", "test")
  assert ds.class_names == ("background", "pet") and ds.num_classes == 2
  assert ds.ignore_index == ignore and ds.in_channels == 3
  for i, rec in enumerate(records):
    trimap = rec["segmentation_mask"][..., 0]
    image, label, name = ds.decode(rec)
    expected = np.select([trimap == 1, trimap == 2, trimap == 3], [1, 0, border_class])
    np.testing.assert_array_equal(label, expected)
    assert name == f"pet_{i}.jpg"
    ex = ds.example("validation", i)  # Resized (nearest) to SIZE x SIZE.
    assert ex["image"].shape == (SIZE, SIZE, 3) and ex["label"].shape == (SIZE, SIZE)
    assert set(np.unique(ex["label"])) <= {0, 1, border_class}


def test_pet_through_load_config(tmp_path, rng):
  records = _pet_records(rng, n=4)
  mock, _ = _mocked(records)
  cfg = data.default_config()
  cfg.name = "oxford_iiit_pet"
  cfg.data_dir = str(tmp_path)
  cfg.image_size = SIZE
  with mock:
    ds = data.load(cfg)
  batch = next(data.eval_batches(ds, "test", batch_size=4))
  assert batch["image"].shape == (4, SIZE, SIZE, 3)
  assert batch["valid"].all()
  assert set(np.unique(batch["label"])) <= {0, 1, 255}


def test_pet_unknown_mask_value_names_the_file(tmp_path, rng):
  records = _pet_records(rng, n=3)
  records[1]["segmentation_mask"][0, 0, 0] = 7
  mock, _ = _mocked(records)
  with mock:
    ds = catalogue.load("oxford_iiit_pet", data_dir=str(tmp_path), image_size=SIZE)
  ds.example("train", 0)
  with pytest.raises(
    ValueError, match=r"pet_1\.jpg.*value\(s\) \[7\] outside the known values \[1, 2, 3\]"
  ):
    ds.example("train", 1)


def test_default_mock_data_gives_a_clear_error(tmp_path):
  """tfds's own random mock has masks of another size than the images: a named error."""
  with tfds.testing.mock_data(num_examples=2):
    ds = catalogue.load("oxford_iiit_pet", data_dir=str(tmp_path), image_size=SIZE)
    with pytest.raises(ValueError, match=r"oxford_iiit_pet.*example 0"):
      ds.example("train", 0)


def test_unknown_names():
  assert "oxford_iiit_pet" in catalogue.names()
  with pytest.raises(ValueError, match=r"unknown data set 'voc'.*oxford_iiit_pet"):
    catalogue.load("voc", data_dir=None, image_size=SIZE)
  with pytest.raises(ValueError, match=r"border must be one of"):
    catalogue.pet_label_map("edge")
