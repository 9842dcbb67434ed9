"""Pipeline: config and load errors, (seed, step) order and resume, augmentation, global
arrays over 8 CPU devices, eval padding, label validation, worker processes."""

import dataclasses
import itertools

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from seg_jax import data
from seg_jax.data import dataset as dataset_lib
from seg_jax.data.dataset import Augment, SegDataset

N_TRAIN, N_VAL = 10, 7


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
  cfg = data.default_config()
  cfg.data_dir = str(tmp_path_factory.mktemp("tfds"))
  cfg.image_size = 32
  cfg.synthetic.num_train, cfg.synthetic.num_validation, cfg.synthetic.num_test = N_TRAIN, N_VAL, 3
  return data.load(cfg)


def _take(iterator, n):
  return [jax.tree.map(np.asarray, b) for b in itertools.islice(iterator, n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b, strict=True):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def _index_of(ds, image):
  """Which training example an unaugmented image is (exact match)."""
  refs = [ds.example("train", i)["image"] for i in range(N_TRAIN)]
  hits = [i for i, r in enumerate(refs) if np.array_equal(r, image)]
  assert len(hits) == 1
  return hits[0]


# ----------------------------------------------------------------------------------------------
# Config and load.


def test_default_config_fields():
  cfg = data.default_config()
  assert cfg.name == "synthetic_shapes" and cfg.config == "balanced" and cfg.image_size == 64
  assert cfg.data_dir == ""
  assert dict(cfg.synthetic) == {
    "num_train": 1000,
    "num_validation": 200,
    "num_test": 200,
    "seed": 0,
  }
  assert set(cfg.augment) == {
    "flip_horizontal",
    "flip_vertical",
    "rotate90",
    "scale_min",
    "scale_max",
  }
  assert set(cfg.folder) >= {"path", "num_classes", "mask_values", "validation_fraction"}
  assert cfg.num_workers == 0
  assert set(data.names()) >= {"synthetic_shapes", "image_folder", "oxford_iiit_pet"}


def _plain_config(**changes):
  """default_config() as a plain (not type-locked) ConfigDict, with top-level changes."""
  d = data.default_config().to_dict()
  d.update(changes)
  return ml_collections.ConfigDict(d)


def test_load_errors():
  with pytest.raises(
    ValueError, match=r"unknown data set 'mnist'.*synthetic_shapes.*oxford_iiit_pet"
  ):
    data.load(_plain_config(name="mnist"))
  with pytest.raises(ValueError, match=r"unknown synthetic_shapes config 'hard'.*'imbalanced'"):
    data.load(_plain_config(config="hard"))
  with pytest.raises(TypeError, match=r"config.data.image_size must be int, got '64' \(str\)"):
    data.load(_plain_config(image_size="64"))
  with pytest.raises(ValueError, match=r"image_size must be >= 8"):
    data.load(_plain_config(image_size=4))
  bad_aug = _plain_config()
  bad_aug.augment.scale_min = 0.5
  with pytest.raises(ValueError, match=r"scale_min <= scale_max.*scale_min=0.5"):
    data.load(bad_aug)
  with pytest.raises(ValueError, match=r"path is empty; set it \(config.data.folder.path\)"):
    data.load(_plain_config(name="image_folder"))


# ----------------------------------------------------------------------------------------------
# Order: a function of (seed, step).


def test_resume_equals_uninterrupted(ds):
  full = _take(data.train_batches(ds, batch_size=4, seed=3), 9)  # 3.6 epochs of 10 examples.
  for k in (1, 4, 7):
    resumed = _take(data.train_batches(ds, batch_size=4, seed=3, start_step=k), 9 - k)
    _assert_batches_equal(full[k:], resumed)
  again = _take(data.train_batches(ds, batch_size=4, seed=3), 9)
  _assert_batches_equal(full, again)
  other = _take(data.train_batches(ds, batch_size=4, seed=4), 1)
  assert not np.array_equal(other[0]["image"], full[0]["image"])


def test_epochs_are_permutations(ds):
  """Without augmentation, every block of N consecutive stream positions is a permutation of
  the split, and successive epochs are shuffled differently."""
  batches = _take(data.train_batches(ds, batch_size=5, seed=0, augment=False), 6)
  order = [_index_of(ds, img) for b in batches for img in b["image"]]
  epochs = [order[i : i + N_TRAIN] for i in range(0, 3 * N_TRAIN, N_TRAIN)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(N_TRAIN))
  assert epochs[0] != epochs[1] and epochs[1] != epochs[2]
  assert epochs[0] != list(range(N_TRAIN))


def test_augmentation_applies_one_transform_to_image_and_label(ds):
  """With zoom off, each augmented example is one of the 8 flips/rotations of the example at
  the same stream position, applied identically to image and label; several differ."""
  dihedral = dataclasses.replace(
    ds,
    augment=Augment(
      flip_horizontal=True, flip_vertical=True, rotate90=True, scale_min=1.0, scale_max=1.0
    ),
  )
  plain = _take(data.train_batches(dihedral, batch_size=5, seed=1, augment=False), 4)
  aug = _take(data.train_batches(dihedral, batch_size=5, seed=1, augment=True), 4)
  transformed = 0
  for p, a in zip(plain, aug, strict=True):
    for img, lab, aimg, alab in zip(p["image"], p["label"], a["image"], a["label"], strict=True):
      found = None
      for k, flip in itertools.product(range(4), (False, True)):
        ti, tl = np.rot90(img, k), np.rot90(lab, k)
        if flip:
          ti, tl = ti[:, ::-1], tl[:, ::-1]
        if np.array_equal(ti, aimg) and np.array_equal(tl, alab):
          found = (k, flip)
          break
      assert found is not None
      transformed += found != (0, False)
  assert transformed >= 10  # 20 examples, 7/8 of them transformed on average.


def test_resize_matches_reference():
  """Labels: nearest neighbour, source index floor(x0 + (j + 1/2) * width / W); images:
  bilinear, exact on a linear ramp away from the border when upsampling."""
  h, w = 12, 20
  label = np.arange(h * w, dtype=np.int32).reshape(h, w)
  ramp = np.broadcast_to(np.arange(w, dtype=np.float32)[None, :, None] + 0.5, (h, w, 2))
  box = (3.3, 2.1, 3.3 + 11.7, 2.1 + 7.3)
  out_img, out_lab = dataset_lib.resize(np.ascontiguousarray(ramp), label, (16, 24), box)
  rows = np.floor(box[1] + (np.arange(16) + 0.5) * (box[3] - box[1]) / 16).astype(int)
  cols = np.floor(box[0] + (np.arange(24) + 0.5) * (box[2] - box[0]) / 24).astype(int)
  np.testing.assert_array_equal(out_lab, label[rows][:, cols])
  x = box[0] + (np.arange(24) + 0.5) * (box[2] - box[0]) / 24  # Sample positions (pixel units).
  inner = (x > 1.0) & (x < w - 1.0)
  np.testing.assert_allclose(
    out_img[:, inner, 0], np.broadcast_to(x[inner], (16, inner.sum())), atol=1e-4
  )
  np.testing.assert_array_equal(out_img[..., 0], out_img[..., 1])


def test_zoom_crop_is_a_window(rng):
  """scale 2: the label shows a contiguous window of about half the size, no flip, and the
  image (a column ramp) was cropped from the same columns."""
  h, w = 16, 16
  label = np.arange(h * w, dtype=np.int32).reshape(h, w)
  image = np.broadcast_to(np.arange(w, dtype=np.float32)[None, :, None], (h, w, 1)).copy()
  options = Augment(flip_horizontal=False, flip_vertical=False, scale_min=2.0, scale_max=2.0)
  for _ in range(5):
    out_img, out_lab = dataset_lib.augment(image, label, (h, w), options, rng)
    src_rows, src_cols = out_lab // w, out_lab % w
    assert (src_rows == src_rows[:, :1]).all() and (src_cols == src_cols[:1, :]).all()
    for steps in (np.diff(src_rows[:, 0]), np.diff(src_cols[0])):
      assert set(np.unique(steps)) <= {0, 1}
      assert 7 <= steps.sum() <= 8
    # Upsampled ramp stays within half a source pixel of the nearest-neighbour column.
    assert np.abs(out_img[2:-2, 2:-2, 0] - src_cols[2:-2, 2:-2]).max() <= 0.5 + 1e-5


# ----------------------------------------------------------------------------------------------
# Global arrays and sharding.


def test_global_arrays_over_8_devices(ds):
  assert jax.device_count() == 8
  mesh = Mesh(np.array(jax.devices()), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  host = _take(data.train_batches(ds, batch_size=16, seed=2), 2)
  for ref, batch in zip(
    host,
    itertools.islice(data.train_batches(ds, batch_size=16, seed=2, sharding=sharding), 2),
    strict=True,
  ):
    for key in ("image", "label"):
      arr = batch[key]
      assert isinstance(arr, jax.Array) and arr.sharding == sharding
      assert arr.shape == ref[key].shape and arr.dtype == ref[key].dtype
      for shard in arr.addressable_shards:
        assert shard.data.shape[0] == 2
        np.testing.assert_array_equal(np.asarray(shard.data), ref[key][shard.index])
  ev = next(data.eval_batches(ds, "validation", batch_size=8, sharding=sharding))
  assert ev["valid"].sharding == sharding and ev["valid"].dtype == np.bool_
  # A 4 x 2 mesh with the batch over 'data' only: each row block lives on 2 devices.
  mesh2 = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
  b2 = next(data.train_batches(ds, batch_size=16, seed=2, sharding=NamedSharding(mesh2, P("data"))))
  np.testing.assert_array_equal(np.asarray(b2["label"]), host[0]["label"])
  with pytest.raises(ValueError, match=r"batch_size=12"):
    data.train_batches(ds, batch_size=12, seed=0, sharding=sharding)


# ----------------------------------------------------------------------------------------------
# Evaluation batches.


def test_eval_padding_and_valid_mask(ds):
  batches = _take(data.eval_batches(ds, "validation", batch_size=4), 10)
  assert len(batches) == 2  # ceil(7 / 4), then the iterator ends.
  np.testing.assert_array_equal(np.concatenate([b["valid"] for b in batches]), [True] * 7 + [False])
  for i in range(N_VAL):
    ref = ds.example("validation", i)
    b, r = divmod(i, 4)
    np.testing.assert_array_equal(batches[b]["image"][r], ref["image"])
    np.testing.assert_array_equal(batches[b]["label"][r], ref["label"])
  assert not batches[1]["image"][3].any() and not batches[1]["label"][3].any()


# ----------------------------------------------------------------------------------------------
# Bad data.


def _memory_dataset(labels):
  records = [
    {"image": np.full((8, 8, 1), i, np.uint8), "label": lab, "id": f"img{i}.png"}
    for i, lab in enumerate(labels)
  ]
  return SegDataset(
    name="memory",
    num_classes=2,
    class_names=("bg", "fg"),
    in_channels=1,
    spatial_shape=(8, 8),
    ignore_index=None,
    sources={"train": records, "validation": records},
    decode=_decode_memory,
  )


def _decode_memory(record):
  return record["image"], record["label"], record["id"]


def test_bad_labels_name_the_example():
  good = np.zeros((8, 8), np.int32)
  bad = good.copy()
  bad[2, 2] = 5
  ds = _memory_dataset([good, good, good, bad])
  with pytest.raises(
    ValueError, match=r"memory split 'validation' example 3 \(img3\.png\).*value\(s\) 5"
  ):
    list(data.eval_batches(ds, "validation", batch_size=2))
  with pytest.raises(
    ValueError, match=r"memory split 'train' example 3 \(img3\.png\).*value\(s\) 5"
  ):
    _take(data.train_batches(ds, batch_size=4, seed=0), 2)
  floats = _memory_dataset([good.astype(np.float32)])
  with pytest.raises(ValueError, match=r"example 0 \(img0\.png\).*must be integers"):
    floats.example("train", 0)
  wrong_size = _memory_dataset([np.zeros((8, 7), np.int32)])
  with pytest.raises(ValueError, match=r"example 0 \(img0\.png\): label size \(8, 7\) differs"):
    wrong_size.example("train", 0)
  with pytest.raises(KeyError, match=r"unknown split 'test'.*'train', 'validation'"):
    ds.source("test")


# ----------------------------------------------------------------------------------------------
# Worker processes.


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_worker_processes_give_the_same_batches(ds):
  from absl import flags

  flags.FLAGS.mark_as_parsed()
  threads = _take(data.train_batches(ds, batch_size=4, seed=5), 3)
  workers = data.train_batches(dataclasses.replace(ds, num_workers=1), batch_size=4, seed=5)
  _assert_batches_equal(threads, _take(workers, 3))
  workers.close()


# ----------------------------------------------------------------------------------------------
# Two JAX processes.

_PROCESS_SCRIPT = r"""
import os, sys
os.environ["JAX_PLATFORMS"] = "cpu"
import jax
jax.config.update("jax_num_cpu_devices", 2)
pid, port, data_dir, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from seg_jax import data
cfg = data.default_config()
cfg.data_dir, cfg.image_size = data_dir, 32
cfg.synthetic.num_train, cfg.synthetic.num_validation, cfg.synthetic.num_test = 10, 7, 3
ds = data.load(cfg)  # Process 0 builds, process 1 waits, then reads the same files.
sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
saved = {}
for name, it in (
  ("train", data.train_batches(ds, batch_size=8, seed=7, start_step=3, sharding=sharding)),
  ("eval", data.eval_batches(ds, "validation", batch_size=4, sharding=sharding)),
):
  for step, batch in zip(range(2), it):
    for key, arr in batch.items():
      assert arr.shape[0] == (8 if name == "train" else 4), arr.shape
      for shard in arr.addressable_shards:
        start = shard.index[0].start or 0
        saved[f"{name}/{step}/{key}/{start}"] = np.asarray(shard.data)
np.savez(out, **saved)
jax.distributed.shutdown()
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_processes_assemble_the_single_process_batches(tmp_path):
  import socket
  import subprocess
  import sys

  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  data_dir = str(tmp_path / "tfds")
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        "-c",
        _PROCESS_SCRIPT,
        str(i),
        str(port),
        data_dir,
        str(tmp_path / f"p{i}.npz"),
      ],
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(2)
  ]
  try:
    outputs = [p.communicate(timeout=200)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, out in zip(procs, outputs, strict=True):
    assert p.returncode == 0, out[-3000:]
  shards = {}
  for i in range(2):
    with np.load(tmp_path / f"p{i}.npz") as f:
      shards.update({k: f[k] for k in f.files})
  # Every row of each global batch came from exactly one device; together they equal the
  # single-process batches of the same (seed, step).
  cfg = data.default_config()
  cfg.data_dir, cfg.image_size = data_dir, 32
  cfg.synthetic.num_train, cfg.synthetic.num_validation, cfg.synthetic.num_test = 10, 7, 3
  ds = data.load(cfg)
  refs = {
    "train": _take(data.train_batches(ds, batch_size=8, seed=7, start_step=3), 2),
    "eval": _take(data.eval_batches(ds, "validation", batch_size=4), 2),
  }
  for name, batches in refs.items():
    for step, ref in enumerate(batches):
      for key, value in ref.items():
        starts = sorted(
          int(k.split("/")[-1]) for k in shards if k.startswith(f"{name}/{step}/{key}/")
        )
        assert starts == list(range(0, value.shape[0], value.shape[0] // 4))
        got = np.concatenate([shards[f"{name}/{step}/{key}/{s}"] for s in starts])
        np.testing.assert_array_equal(got, value)
