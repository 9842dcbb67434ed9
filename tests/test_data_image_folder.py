"""image_folder: good folders (formats, splits, mappings) and every bad-folder error."""

import os

import numpy as np
import pytest
from PIL import Image

from seg_jax.data import image_folder
from seg_jax.data.image_folder import Options


def _save(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if path.endswith(".npy"):
    np.save(path, array)
  else:
    Image.fromarray(array).save(path)


def _rgb(rng, shape=(16, 16)):
  return rng.integers(0, 256, (*shape, 3), dtype=np.uint8)


def _mask(rng, shape=(16, 16), num_classes=3):
  return rng.integers(0, num_classes, shape, dtype=np.uint8)


def _flat_folder(root, rng, n=10):
  """n RGB PNG images with grey PNG masks of 3 classes; returns stem -> (image, mask)."""
  files = {}
  for i in range(n):
    image, mask = _rgb(rng), _mask(rng)
    _save(f"{root}/images/im{i:02d}.png", image)
    _save(f"{root}/masks/im{i:02d}.png", mask)
    files[f"im{i:02d}"] = (image, mask)
  return files


def _stem(ds, split, index):
  name = ds.decode(ds.source(split)[index])[2]
  return os.path.splitext(os.path.basename(name))[0]


def test_flat_folder_splits_and_exact_values(tmp_path, rng):
  files = _flat_folder(tmp_path / "data", rng)
  ds = image_folder.load(
    Options(path=str(tmp_path / "data"), num_classes=3, validation_fraction=0.2),
    data_dir=str(tmp_path / "tfds"),
    image_size=16,
  )
  assert ds.splits == ("train", "validation")
  assert (ds.num_examples("train"), ds.num_examples("validation")) == (8, 2)
  assert ds.num_classes == 3 and ds.class_names == ("background", "class_1", "class_2")
  assert ds.in_channels == 3 and ds.ignore_index is None
  stems = {_stem(ds, s, i) for s in ds.splits for i in range(ds.num_examples(s))}
  assert stems == set(files)
  for split in ds.splits:
    for i in range(ds.num_examples(split)):
      image, mask = files[_stem(ds, split, i)]
      ex = ds.example(split, i)
      np.testing.assert_array_equal(ex["image"], image.astype(np.float32) / 255)
      np.testing.assert_array_equal(ex["label"], mask.astype(np.int32))
  # The split is a function of split_seed: the same options give the same validation stems.
  again = image_folder.split_files(Options(path=str(tmp_path / "data"), num_classes=3))
  assert {p[0] for p in again["validation"]} == {_stem(ds, "validation", i) for i in range(2)}


def test_formats_channels_and_resizing(tmp_path, rng):
  """JPEG+npy mask, 16-bit grey TIFF+TIFF mask, float npy image+PNG mask, other sizes."""
  root = tmp_path / "data"
  grey16 = rng.integers(0, 65536, (16, 16), dtype=np.uint16)
  float_img = rng.random((16, 16, 3)).astype(np.float32)
  masks = {k: _mask(rng, num_classes=2) for k in ("a", "b", "c", "d")}
  _save(f"{root}/images/a.jpg", _rgb(rng))
  _save(f"{root}/masks/a.npy", masks["a"].astype(np.int64))
  _save(f"{root}/images/b.tif", grey16)
  _save(f"{root}/masks/b.tiff", masks["b"])
  _save(f"{root}/images/c.npy", float_img)
  _save(f"{root}/masks/c.png", masks["c"])
  big_mask = np.kron(masks["d"], np.ones((2, 3), np.uint8))  # 32 x 48, resized to 16 x 16.
  _save(f"{root}/images/d.png", _rgb(rng, (32, 48)))
  _save(f"{root}/masks/d.png", big_mask)
  ds = image_folder.load(
    Options(path=str(root), num_classes=2, channels=3, validation_fraction=0.25),
    data_dir=str(tmp_path / "tfds"),
    image_size=16,
  )
  by_stem = {
    _stem(ds, s, i): ds.example(s, i) for s in ds.splits for i in range(ds.num_examples(s))
  }
  assert set(by_stem) == {"a", "b", "c", "d"}
  for ex in by_stem.values():
    assert ex["image"].shape == (16, 16, 3) and ex["image"].dtype == np.float32
    assert ex["label"].shape == (16, 16) and ex["label"].dtype == np.int32
  np.testing.assert_array_equal(by_stem["a"]["label"], masks["a"])
  expected_grey = grey16.astype(np.float32) / 65535
  np.testing.assert_array_equal(by_stem["b"]["image"], np.repeat(expected_grey[..., None], 3, -1))
  np.testing.assert_array_equal(by_stem["c"]["image"], float_img)
  # Nearest-neighbour downsizing of a 2x3 block-replicated mask recovers the blocks.
  np.testing.assert_array_equal(by_stem["d"]["label"], masks["d"])


def test_subfolder_layout_and_mask_values(tmp_path, rng):
  root = tmp_path / "data"
  counts = {"train": 3, "validation": 2, "test": 1}
  for split, n in counts.items():
    for i in range(n):
      _save(f"{root}/{split}/images/{split}{i}.png", _rgb(rng))
      _save(f"{root}/{split}/masks/{split}{i}.png", _mask(rng, num_classes=2) * 255)
  ds = image_folder.load(
    Options(path=str(root), num_classes=2, mask_values=(0, 255), class_names=("bg", "cell")),
    data_dir=str(tmp_path / "tfds"),
    image_size=16,
  )
  assert ds.splits == ("train", "validation", "test")
  assert {s: ds.num_examples(s) for s in ds.splits} == counts
  assert ds.class_names == ("bg", "cell")
  for split in ds.splits:
    for i in range(ds.num_examples(split)):
      raw = np.asarray(Image.open(ds.decode(ds.source(split)[i])[2].replace("images", "masks")))
      np.testing.assert_array_equal(ds.example(split, i)["label"], (raw == 255).astype(np.int32))


def test_folder_change_triggers_rebuild(tmp_path, rng):
  root = tmp_path / "data"
  _flat_folder(root, rng, n=3)
  options = Options(path=str(root), num_classes=3)
  first = image_folder.make_config(options).name
  ds = image_folder.load(options, data_dir=str(tmp_path / "tfds"), image_size=16)
  new_mask = np.full((16, 16), 2, np.uint8)
  os.remove(f"{root}/masks/im00.png")
  _save(f"{root}/masks/im00.png", new_mask)
  os.utime(f"{root}/masks/im00.png", ns=(1, 1))
  assert image_folder.make_config(options).name != first
  ds = image_folder.load(options, data_dir=str(tmp_path / "tfds"), image_size=16)
  labels = {
    _stem(ds, s, i): ds.example(s, i)["label"] for s in ds.splits for i in range(ds.num_examples(s))
  }
  np.testing.assert_array_equal(labels["im00"], new_mask)


# ----------------------------------------------------------------------------------------------
# Errors: each names the file at fault.


def _load(root, tmp_path, **kw):
  options = Options(path=str(root), **{"num_classes": 3, **kw})
  return image_folder.load(options, data_dir=str(tmp_path / "tfds"), image_size=16)


def test_error_unreadable_file(tmp_path, rng):
  root = tmp_path / "data"
  _flat_folder(root, rng, n=3)
  (root / "images" / "im01.png").write_bytes(b"this is not a png")
  with pytest.raises(ValueError, match=r"cannot read .*images/im01\.png"):
    _load(root, tmp_path)


def test_error_mask_size_differs(tmp_path, rng):
  root = tmp_path / "data"
  _flat_folder(root, rng, n=3)
  _save(f"{root}/masks/im02.png", _mask(rng, (16, 15)))
  with pytest.raises(
    ValueError, match=r"mask .*masks/im02\.png has size \(16, 15\).*im02\.png has size \(16, 16\)"
  ):
    _load(root, tmp_path)


def test_error_label_outside_classes(tmp_path, rng):
  root = tmp_path / "data"
  _flat_folder(root, rng, n=3)
  bad = _mask(rng)
  bad[3, 4] = 7
  _save(f"{root}/masks/im01.png", bad)
  with pytest.raises(ValueError, match=r"mask .*masks/im01\.png holds value\(s\) 7 outside"):
    _load(root, tmp_path)
  # 0/255 binary masks get a hint; ignore_index admits the extra value.
  _save(f"{root}/masks/im01.png", _mask(rng, num_classes=2) * 255)
  for f in ("im00", "im02"):
    _save(f"{root}/masks/{f}.png", _mask(rng, num_classes=2))
  with pytest.raises(ValueError, match=r"im01\.png holds value\(s\) 255.*mask_values=\(0, 255\)"):
    _load(root, tmp_path, num_classes=2)
  ds = _load(root, tmp_path, num_classes=2, ignore_index=255)
  assert ds.ignore_index == 255


def test_error_image_without_mask_and_mask_without_image(tmp_path, rng):
  root = tmp_path / "data"
  _flat_folder(root, rng, n=3)
  _save(f"{root}/images/lonely.png", _rgb(rng))
  with pytest.raises(ValueError, match=r"image .*images/lonely\.png has no mask"):
    _load(root, tmp_path)
  os.remove(f"{root}/images/lonely.png")
  _save(f"{root}/masks/orphan.png", _mask(rng))
  with pytest.raises(ValueError, match=r"mask .*masks/orphan\.png has no image"):
    _load(root, tmp_path)


def test_error_duplicate_stem_colour_mask_channels_layout(tmp_path, rng):
  root = tmp_path / "data"
  _flat_folder(root, rng, n=3)
  _save(f"{root}/images/im00.jpg", _rgb(rng))
  with pytest.raises(ValueError, match=r"two files with the stem 'im00'"):
    _load(root, tmp_path)
  os.remove(f"{root}/images/im00.jpg")
  colour = _rgb(rng)
  _save(f"{root}/masks/im00.png", colour)
  with pytest.raises(ValueError, match=r"mask .*masks/im00\.png is a colour image"):
    _load(root, tmp_path)
  _save(f"{root}/masks/im00.png", _mask(rng))
  _save(f"{root}/images/im01.png", rng.integers(0, 256, (16, 16), dtype=np.uint8))
  with pytest.raises(ValueError, match=r"has 1 channels but .* has 3|has 3 channels but .* has 1"):
    _load(root, tmp_path)
  with pytest.raises(ValueError, match=r"images/im00\.png has 3 channels, but channels=1"):
    _load(root, tmp_path, channels=1)
  assert _load(root, tmp_path, channels=3).in_channels == 3
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ValueError, match=r"must hold images/ and masks/"):
    _load(empty, tmp_path)
  with pytest.raises(ValueError, match=r"is not a folder"):
    _load(tmp_path / "nowhere", tmp_path)


def test_options_errors():
  with pytest.raises(ValueError, match=r"mask_values \(0, 255\) must list one raw value per class"):
    Options(path="x", num_classes=3, mask_values=(0, 255))
  with pytest.raises(ValueError, match=r"validation_fraction must lie in \(0, 1\)"):
    Options(path="x", validation_fraction=1.0)
  with pytest.raises(ValueError, match=r"2 class_names"):
    Options(path="x", num_classes=3, class_names=("a", "b"))
