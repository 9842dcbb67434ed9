"""The trainer in one process: outputs, exact evaluation, checkpoints, non-finite losses.

Runs use configs/runlocal.py sizes (a 4-feature U-Net on 16x16 images) on the 8 test devices.
"""

import importlib.util
import json
import os
import pathlib
import struct
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from seg_jax import data as seg_data
from seg_jax import train
from seg_jax.training.checkpoint import Checkpointer
from seg_jax.training.outputs import MetricWriter, read_metrics

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))


def runlocal(data_dir, **train_overrides):
  spec = importlib.util.spec_from_file_location("_runlocal", ROOT / "configs" / "runlocal.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data.data_dir = str(data_dir)
  for key, value in train_overrides.items():
    config.train[key] = value
  return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


def read_tensorboard_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
  """Scalars of the event files in ``logdir``, read from the TFRecord framing directly."""
  from tensorboardX.proto import event_pb2

  out: dict[str, list] = {}
  for path in sorted(pathlib.Path(logdir).glob("events.out.tfevents.*")):
    raw = path.read_bytes()
    pos = 0
    while pos < len(raw):
      (length,) = struct.unpack("<Q", raw[pos : pos + 8])
      record = raw[pos + 12 : pos + 12 + length]
      pos += 12 + length + 4
      event = event_pb2.Event.FromString(record)
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def predict_split(config, workdir, split, step):
  """Class maps of every example of ``split`` from the checkpoint at ``step``, one example at a
  time on one device (no batching, no padding)."""
  ds = seg_data.load(config.data)
  model = train.build_model(config, ds.num_classes, (*ds.spatial_shape, ds.in_channels))
  tx, _ = train.make_optimizer(config.train)
  mesh = train.make_mesh(jax.devices()[:1])
  target = train.abstract_state(model, tx, mesh)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=10)
  state = ckpt.restore(target, step)
  ckpt.close()
  apply = jax.jit(lambda s, x: train.apply_model(model, s, s.params, x, train=False)[0])
  preds, labels = [], []
  for i in range(ds.num_examples(split)):
    ex = ds.example(split, i)
    logits = np.asarray(apply(state, ex["image"][None]))[0]
    preds.append((logits[..., 0] > 0).astype(np.int64))
    labels.append(ex["label"])
  return np.stack(preds), np.stack(labels)


def test_train_and_evaluate_outputs(data_dir, tmp_path, capsys):
  # The first 4 of the 8 steps are checked, the others not: both steps run.
  config = runlocal(data_dir, eval_batch_size=16, progress_bar=True, check_inputs_steps=4)
  config.data.synthetic.num_validation = 20  # 2 eval batches of 16, the second padded.
  workdir = tmp_path / "run"
  final = train.train_and_evaluate(config, str(workdir))
  err = capsys.readouterr().err
  assert "loss=" in err and ("step/s" in err or "s/step" in err)  # tqdm: loss, speed, ETA
  assert "<" in err  # tqdm's "elapsed<remaining"

  records = read_metrics(workdir)
  train_records = [r for r in records if r["split"] == "train"]
  val_records = [r for r in records if r["split"] == "validation"]
  test_records = [r for r in records if r["split"] == "test"]
  assert [r["step"] for r in train_records] == [2, 4, 6, 8]
  assert all(np.isfinite(r["loss"]) and r["steps_per_sec"] > 0 for r in train_records)
  assert [r["step"] for r in val_records] == [4, 8]
  assert [r["step"] for r in test_records] == [8]
  for key in ("dice_mean", "iou_mean", "precision_mean", "recall_mean", "dice/shape", "hd95"):
    assert key in val_records[-1], key
  assert final == {k: v for k, v in val_records[-1].items() if k != "split"}
  assert final["step"] == 8

  # Evaluation is exact over the whole split: recompute the final validation Dice and IoU
  # from the step-8 checkpoint, one example at a time, with the formulas in NumPy.
  preds, labels = predict_split(config, workdir, "validation", 8)
  assert preds.shape[0] == 20 and final["num_pixels"] == labels.size
  tp = np.sum((preds == 1) & (labels == 1))
  fp = np.sum((preds == 1) & (labels == 0))
  fn = np.sum((preds == 0) & (labels == 1))
  assert final["dice/shape"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
  assert final["iou/shape"] == pytest.approx(tp / (tp + fp + fn), abs=1e-12)
  assert final["dice_mean"] == final["dice/shape"]

  scalars = read_tensorboard_scalars(workdir / "tensorboard")
  assert [s for s, _ in scalars["train/loss"]] == [2, 4, 6, 8]
  assert scalars["train/loss"][-1][1] == pytest.approx(train_records[-1]["loss"], rel=1e-6)
  assert scalars["validation/dice_mean"][-1] == (8, pytest.approx(final["dice_mean"], rel=1e-6))

  saved = json.loads((workdir / "config.json").read_text())
  assert saved["loss"]["name"] == "dice_ce" and saved["data"]["synthetic"]["num_validation"] == 20
  assert saved["train"] == config.train.to_dict()

  png = Image.open(workdir / "predictions.png")
  assert png.size[0] > 300 and png.size[1] > 200  # 2 rows of image | truth | prediction

  ckpt = Checkpointer(str(workdir / "checkpoints"), keep=2)
  assert ckpt.all_steps() == [4, 8] and ckpt.latest_step() == 8
  ckpt.close()

  # A rerun of a finished workdir trains nothing and returns the same final metrics.
  again = train.train_and_evaluate(config, str(workdir))
  assert again == final
  assert read_metrics(workdir) == records

  # Fields that only change how the run is watched may differ on a rerun.
  watched = runlocal(data_dir, eval_batch_size=16, progress_bar=False, log_every=4)
  watched.data.synthetic.num_validation = 20
  assert train.train_and_evaluate(watched, str(workdir)) == final

  # The same workdir with another config that changes what is computed: a clear error naming
  # the fields, nothing overwritten.
  for field, value, shown in [
    ("seed", 1, "train.seed: 0 -> 1"),
    ("learning_rate", 0.5, "train.learning_rate"),
    ("steps", 6, "train.steps: 8 -> 6"),
  ]:
    changed = runlocal(data_dir, eval_batch_size=16, **{field: value})
    changed.data.synthetic.num_validation = 20
    with pytest.raises(ValueError, match=rf"different config \({shown}"):
      train.train_and_evaluate(changed, str(workdir))
  assert read_metrics(workdir) == records
  # config.json is that of the last run that went ahead (the watched one), not of a refused one.
  assert json.loads((workdir / "config.json").read_text())["train"] == watched.train.to_dict()

  # A checkpoint past config.train.steps (the config.json lost): an error, not a wrong step.
  (workdir / "config.json").unlink()
  shorter = runlocal(data_dir, eval_batch_size=16, steps=6)
  shorter.data.synthetic.num_validation = 20
  with pytest.raises(ValueError, match=r"checkpoint at step 8, past config.train.steps=6"):
    train.train_and_evaluate(shorter, str(workdir))

  # The same workdir with another model: a clear error, nothing overwritten.
  config.model.features = 8
  with pytest.raises(ValueError, match=r"does not fit .* shape \(3, 3, 3, 4\) in the checkpoint"):
    train.train_and_evaluate(config, str(workdir))
  assert read_metrics(workdir) == records


def test_checkpointer_keeps_latest_and_best(tmp_path):
  ckpt = Checkpointer(str(tmp_path), keep=2, async_save=False)
  state = {"w": jnp.arange(3.0)}
  dice = {1: 0.5, 2: 0.9, 3: 0.6, 4: None, 5: 0.7, 6: 0.65}
  for step, d in dice.items():
    ckpt.save(step, {"w": state["w"] + step}, metrics=None if d is None else {"dice_mean": d})
  ckpt.wait()
  assert ckpt.all_steps() == [2, 5, 6]  # best (0.9 at step 2) + the 2 latest
  assert ckpt.best_step() == 2 and ckpt.latest_step() == 6
  restored = ckpt.restore(state, 2)
  np.testing.assert_array_equal(restored["w"], np.arange(3.0) + 2)
  ckpt.close()
  # The ranking survives a restart: a new manager on the directory keeps step 2 as the best.
  ckpt = Checkpointer(str(tmp_path), keep=2, async_save=False)
  assert ckpt.best_step() == 2
  ckpt.save(7, {"w": state["w"]}, metrics=None)
  ckpt.save(8, {"w": state["w"]}, metrics={"dice_mean": 0.95})
  ckpt.wait()
  assert ckpt.all_steps() == [7, 8] and ckpt.best_step() == 8
  ckpt.close()


def test_metric_writer_drops_records_after_the_resumed_step(tmp_path):
  w = MetricWriter(str(tmp_path))
  for step in (2, 4, 6):
    w.write(step, "train", {"loss": float(step)})
  w.write(4, "validation", {"dice_mean": 0.5})
  w.close()
  w = MetricWriter(str(tmp_path), resume_step=4)
  w.write(6, "train", {"loss": 60.0})
  w.close()
  steps = [(r["step"], r["split"], r.get("loss")) for r in read_metrics(tmp_path)]
  assert steps == [
    (2, "train", 2.0),
    (4, "train", 4.0),
    (4, "validation", None),
    (6, "train", 60.0),
  ]
  # A fresh run (no checkpoint to resume from) starts a new file.
  MetricWriter(str(tmp_path)).close()
  assert read_metrics(tmp_path) == []


def test_nonfinite_loss_stops_and_keeps_checkpoints(data_dir, tmp_path):
  """A learning rate of 1e38 overflows the parameters at the second update (the first has a
  warm-up learning rate of 0): training stops with a clear error, the update is not applied,
  and the checkpoints already written stay as they were."""
  config = runlocal(
    data_dir,
    optimizer="sgd",
    learning_rate=1e38,
    warmup_steps=1,
    grad_clip_norm=0.0,
    checkpoint_every=1,
    eval_every=0,
    log_every=1,
  )
  workdir = tmp_path / "nan"
  with pytest.raises(FloatingPointError, match="Training diverged at step") as info:
    train.train_and_evaluate(config, str(workdir))
  message = str(info.value)
  assert "learning_rate" in message and "untouched" in message
  bad_step = int(message.split("at step ")[1].split(":")[0])
  ckpt = Checkpointer(str(workdir / "checkpoints"), keep=10)
  steps = ckpt.all_steps()
  assert steps and max(steps) < bad_step, (steps, bad_step)
  assert f"(step {max(steps)})" in message
  # The checkpoints hold finite parameters.
  ds = seg_data.load(config.data)
  model = train.build_model(config, ds.num_classes, (*ds.spatial_shape, ds.in_channels))
  tx, _ = train.make_optimizer(config.train)
  target = train.abstract_state(model, tx, train.make_mesh(jax.devices()[:1]))
  state = ckpt.restore(target, max(steps))
  ckpt.close()
  assert int(state.step) == max(steps)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state.params))


def test_bfloat16_model_trains(data_dir, tmp_path):
  # bfloat16 compute (float32 parameters and loss): the loss is finite and goes down.
  config = runlocal(
    data_dir, steps=6, log_every=1, eval_every=0, checkpoint_every=0, test_at_end=False
  )
  config.train.num_plot_examples = 0
  config.model.dtype = "bfloat16"
  final = train.train_and_evaluate(config, str(tmp_path / "bf16"))
  losses_ = [r["loss"] for r in read_metrics(tmp_path / "bf16") if r["split"] == "train"]
  assert len(losses_) == 6 and np.isfinite(losses_).all()
  assert losses_[-1] < losses_[0]
  assert 0.0 <= final["dice_mean"] <= 1.0


def _folder_with_255(root, rng, n=10):
  """An image folder of n 16x16 RGB images with 3-class masks that also hold 255 (a border
  value that the run's loss was not told to ignore)."""
  for sub in ("images", "masks"):
    os.makedirs(root / sub, exist_ok=True)
  for i in range(n):
    mask = rng.integers(0, 3, (16, 16), dtype=np.uint8)
    mask[0, :4] = 255
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
      root / "images" / f"im{i:02d}.png"
    )
    Image.fromarray(mask).save(root / "masks" / f"im{i:02d}.png")


def test_labels_outside_the_classes_stop_training_before_any_checkpoint(tmp_path, rng):
  # The folder declares 255 as its ignore value, so the data pipeline passes it; the loss has no
  # ignore_index. The checked first steps stop the run, naming the value and the valid range,
  # and so do the checked evaluation batches when the training steps are not checked.
  _folder_with_255(tmp_path / "folder", rng)
  config = runlocal(
    tmp_path / "tfds", steps=2, warmup_steps=1, eval_every=2, checkpoint_every=1, log_every=1
  )
  config.data.name = "image_folder"
  config.data.folder.path = str(tmp_path / "folder")
  config.data.folder.num_classes = 3
  config.data.folder.ignore_index = 255
  # Counted per device: each of the 8 devices holds one image of 16x16 pixels.
  expected = r"labels hold 255, valid range \[0, 3\) \(ignore_index=None; 4 of 256 pixels"
  hint = r".*set config\.loss\.options\.ignore_index=255"
  # Unchecked training steps: the evaluation at step 2 fails before that step's checkpoint.
  cases = ((10, 1, "at training step 1"), (0, 0, "on a validation batch"))
  for steps_checked, checkpoint_every, where in cases:
    config.train.check_inputs_steps = steps_checked
    config.train.checkpoint_every = checkpoint_every
    workdir = tmp_path / f"run{steps_checked}"
    with pytest.raises(ValueError, match=f"Input check failed {where}: .*{expected}{hint}"):
      train.train_and_evaluate(config, str(workdir))
    written = [p for p in (workdir / "checkpoints").rglob("*") if p.is_file()]
    assert not written, written
