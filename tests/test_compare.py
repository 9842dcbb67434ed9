"""Tests of seg_jax.compare: loss parsing, per-run configs, timing, and a tiny real comparison."""

import copy
import json
import os
import re

import np_ref
import numpy as np
import pytest
from absl import flags

from seg_jax import compare, losses, train
from seg_jax.choosing import plots
from seg_jax.choosing import run as choosing_run
from seg_jax.training import config as train_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_losses_all_expands_to_the_registry():
  assert compare.parse_losses("all") == losses.names()
  assert compare.parse_losses(" dice , focal,") == ["dice", "focal"]
  assert compare.parse_losses(["cross_entropy"]) == ["cross_entropy"]


def test_unknown_loss_names_the_valid_ones():
  with pytest.raises(ValueError, match=r"unknown loss name\(s\) 'dcie'") as err:
    compare.parse_losses("cross_entropy,dcie")
  message = str(err.value)
  assert "Did you mean 'dice'" in message
  for name in losses.names():
    assert name in message
  with pytest.raises(ValueError, match="empty"):
    compare.parse_losses(" , ")
  with pytest.raises(ValueError, match="'dice' more than once"):
    compare.parse_losses("dice,focal,dice")


def test_cli_unknown_loss_is_a_usage_error():
  argv = [
    "seg_jax.compare",
    f"--config={os.path.join(REPO, 'configs', 'default.py')}",
    "--losses=dice,not_a_loss",
  ]
  flag_values = flags.FlagValues()
  compare.define_flags(flag_values, argv)
  flag_values(argv)
  with pytest.raises(ValueError, match="'not_a_loss'.*Valid names: binary_cross_entropy"):
    compare.run_from_flags(flag_values, argv)


def test_steps_scale_the_schedule():
  config = train_config.default_config()
  t = config.train
  t.steps, t.warmup_steps, t.log_every, t.eval_every, t.checkpoint_every = 600, 50, 20, 200, 200
  short = compare.with_steps(config, 60)
  t = short.train
  assert (t.steps, t.warmup_steps, t.log_every, t.eval_every, t.checkpoint_every) == (
    60,
    5,
    2,
    20,
    20,
  )
  assert config.train.steps == 600  # The input is not changed.
  tiny = compare.with_steps(config, 1)
  assert (tiny.train.warmup_steps, tiny.train.log_every, tiny.train.eval_every) == (0, 1, 1)
  config.train.eval_every = 0
  assert compare.with_steps(config, 60).train.eval_every == 0  # 0 (end only) stays 0.
  with pytest.raises(ValueError, match="steps must be a positive int"):
    compare.with_steps(config, 0)


def test_loss_options_belong_to_the_config_loss():
  config = train_config.default_config()
  config.loss.name = "focal"
  config.loss.options.gamma = 3.0
  config.loss.options.mode = "multiclass"
  focal = compare.loss_config(config, "focal")
  dice = compare.loss_config(config, "dice")
  assert focal.loss.name == "focal" and train_config.loss_options(focal) == {
    "gamma": 3.0,
    "mode": "multiclass",
  }
  # Dice has no gamma: only the shared data-level option is carried over.
  assert dice.loss.name == "dice" and train_config.loss_options(dice) == {"mode": "multiclass"}
  assert config.loss.name == "focal"  # The input is not changed.
  train_config.validate(dice)


def test_train_timing_from_records():
  records = [
    {"step": 10, "split": "train", "steps_per_sec": 5.0},  # 10 steps in 2 s.
    {"step": 10, "split": "validation", "dice_mean": 0.5},
    {"step": 20, "split": "train", "steps_per_sec": 2.0},  # 10 steps in 5 s.
    {"step": 25, "split": "train", "steps_per_sec": 1.0},  # 5 steps in 5 s.
  ]
  seconds, rate = choosing_run.train_timing(records)
  assert seconds == pytest.approx(12.0)
  assert rate == pytest.approx(25 / 12.0)
  assert choosing_run.train_timing([]) == (None, None)


def _table_rows(text: str, heading: str) -> list[list[str]]:
  """The rows (header first) of the first markdown table after ``heading``."""
  section = text.split(heading, 1)[1]
  rows = []
  for line in section.splitlines():
    if line.startswith("|"):
      rows.append([c.strip() for c in line.strip("|").split("|")])
    elif rows:
      break
  return [rows[0], *rows[2:]]  # Drop the |---| separator.


def _check_png(path):
  with open(path, "rb") as f:
    assert f.read(8) == PNG_SIGNATURE, path
  import matplotlib.image

  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.mark.slow
def test_tiny_comparison_with_seeds_report_summary_and_resume(tmp_path, monkeypatch, capsys):
  monkeypatch.syspath_prepend(REPO)  # configs/runlocal.py imports `configs.default`.
  outdir = tmp_path / "cmp"
  argv = [
    "seg_jax.compare",
    f"--config={os.path.join(REPO, 'configs', 'runlocal.py')}",
    f"--config.data.data_dir={tmp_path / 'tfds'}",
    "--config.data.synthetic.num_validation=8",
    "--config.data.synthetic.num_test=8",
    "--config.train.num_plot_examples=0",
    "--losses=cross_entropy,dice",
    "--seeds=2",
    "--steps=4",  # runlocal's 8 steps halved: log every step, evaluate at 2 and 4.
    "--num_examples=8",
    f"--outdir={outdir}",
  ]
  flag_values = flags.FlagValues()
  compare.define_flags(flag_values, argv)
  flag_values(argv)
  summary = compare.run_from_flags(flag_values, argv)
  progress = capsys.readouterr().out
  for i, (name, seed) in enumerate(
    [("cross_entropy", 0), ("cross_entropy", 1), ("dice", 0), ("dice", 1)], 1
  ):
    assert re.search(
      rf"\[{i}/4\] {name} seed {seed}: trained, validation dice_mean 0\.\d{{4}}; ", progress
    )
  assert "3 run(s) to go, ETA" in progress and "comparison trained" in progress

  # Identical settings but the loss and the seed.
  for name in ("cross_entropy", "dice"):
    for seed in (0, 1):
      with open(outdir / name / f"seed{seed}" / "config.json") as f:
        stored = json.load(f)
      assert stored["loss"] == {"name": name, "options": {}}
      assert (stored["train"]["steps"], stored["train"]["seed"]) == (4, seed)

  # summary.json: every field of the documented form.
  with open(outdir / "summary.json") as f:
    saved = json.load(f)
  assert saved["losses"] == ["cross_entropy", "dice"] and saved["seeds"] == [0, 1]
  assert saved["baseline"] == "cross_entropy"
  assert set(saved["ranking"]) == {"cross_entropy", "dice"} and saved["best"] in saved["ranking"]
  assert saved["verdict"].startswith("On this data (2 seed(s) x 8 validation images)")
  for name in ("cross_entropy", "dice"):
    r = saved["results"][name]
    for metric in ("dice_mean", "iou_mean", "nsd_mean", "hd95"):
      assert set(r[metric]) == {"mean", "std", "ci95", "per_seed"}
      assert len(r[metric]["per_seed"]) == 2 and len(r[metric]["ci95"]) == 2
    assert set(r["runs"]) == {"0", "1"}
    for seed, run in r["runs"].items():
      assert set(run["flags"]) <= {"collapsed", "diverged", "not_converged", "miscalibrated"}
      tf = run["threshold_free"]
      assert set(tf) == {"auprc", "dice_at_0.5", "best_dice", "best_threshold", "foreground_share"}
      # The per-image evaluation is that of the final model: its pooled Dice at 0.5 is the
      # trainer's validation dice_mean.
      records = [
        json.loads(x)
        for x in (outdir / name / f"seed{seed}" / "metrics.jsonl").read_text().split("\n")
        if x
      ]
      final = [x for x in records if x["split"] == "validation" and x["step"] == 4][-1]
      assert tf["dice_at_0.5"] == pytest.approx(final.get("dice_mean", 0.0), abs=1e-9)
      assert run["final_dice_mean"] == final.get("dice_mean")
      ev = summary["runs"][name][int(seed)]["eval"]
      ex = ev["examples"]
      assert ex["pred"].shape == ex["label"].shape == (8, 16, 16)
      truth_fg = ex["label"] == 1
      defined = truth_fg.any(axis=(1, 2))
      ref = (
        2
        * (truth_fg & (ex["pred"] == 1)).sum(axis=(1, 2))
        / (truth_fg.sum(axis=(1, 2)) + (ex["pred"] == 1).sum(axis=(1, 2)))
      )
      np.testing.assert_allclose(ev["dice"][defined], ref[defined])
      per_seed = r["dice_mean"]["per_seed"][int(seed)]
      assert per_seed == pytest.approx(float(np.mean(ref[defined])))
      # NSD beside Dice: per image at 1 px on the same images (0 where nothing is predicted).
      nsd = [
        np_ref.surface_dice(p == 1, t, (1.0, 1.0), 1.0)
        for p, t in zip(ex["pred"], truth_fg, strict=True)
      ]
      np.testing.assert_allclose(ev["nsd"][defined], np.asarray(nsd)[defined], rtol=1e-12)
      assert np.isnan(ev["nsd"][~defined]).all()
      nsd_seed = r["nsd_mean"]["per_seed"][int(seed)]
      assert nsd_seed == pytest.approx(float(np.mean(np.asarray(nsd)[defined])))
  vs = saved["results"]["dice"]["vs_baseline"]
  assert set(vs) == {"diff", "ci95", "p_value", "p_holm", "significant"}
  assert saved["results"]["cross_entropy"]["vs_baseline"] is None

  text = (outdir / "report.md").read_text()
  assert text.index("## Verdict") < text.index("## Results") < text.index("## Protocol")
  header, *rows = _table_rows(text, "## Results")
  assert header[:6] == [
    "rank",
    "loss",
    "Dice [95 % CI]",
    "per seed",
    "vs `cross_entropy`",
    "vs best",
  ]
  assert header[6] == "NSD@1px [95 % CI]" and "normalised surface Dice" in text
  for row in rows:
    name = row[1].split()[0].strip("`")
    nsd = saved["results"][name]["nsd_mean"]
    assert row[6].startswith(f"{nsd['mean']:.3f} [") if nsd["mean"] is not None else row[6] == "n/a"
  assert sorted(r[1].split()[0] for r in rows) == ["`cross_entropy`", "`dice`"]
  assert "--seeds=2" in text and "hierarchical percentile bootstrap" in text
  for name in ("learning_curves.png", "predictions.png", "per_image_dice.png"):
    assert f"]({name})" in text
    _check_png(outdir / name)

  # A rerun trains nothing, restores nothing, and rewrites the report from the stored runs.
  calls = []
  monkeypatch.setattr(train, "train_and_evaluate", lambda *a, **k: calls.append("train"))
  monkeypatch.setattr(train, "init_state", lambda *a, **k: calls.append("restore"))
  again = compare.run_from_flags(flag_values, argv)
  assert calls == []
  assert "cross_entropy seed 0: already finished" in capsys.readouterr().out
  assert again["runs"]["dice"][1]["status"] == "cached"
  assert again["results"]["dice"]["dice_mean"] == summary["results"]["dice"]["dice_mean"]

  # An interrupted run (no final metrics, checkpoints left) goes back to the trainer, which
  # resumes from its latest checkpoint; the finished ones are not retrained.
  trained = []
  monkeypatch.setattr(train, "train_and_evaluate", lambda c, w, **k: trained.append((c, w)))
  metrics = outdir / "dice" / "seed1" / "metrics.jsonl"
  kept = [x for x in metrics.read_text().splitlines() if '"split": "validation"' not in x]
  metrics.write_text("\n".join(kept) + "\n")
  dice_config = compare.loss_config(compare.with_steps(flag_values.config, 4), "dice", 1)
  assert compare.run_state(dice_config, str(outdir / "dice" / "seed1")) == "partial"
  compare.run_from_flags(flag_values, argv)
  assert [(c.loss.name, c.train.seed, w) for c, w in trained] == [
    ("dice", 1, str(outdir / "dice" / "seed1"))
  ]
  assert re.search(r"\[4/4\] dice seed 1: resuming from step 4", capsys.readouterr().out)

  # The same directory with other settings is refused (the runs would not be comparable).
  config = flag_values.config
  config.model.features = 8
  with pytest.raises(ValueError, match=r"different configuration \(.*model\.features: 4 -> 8"):
    compare.run_comparison(config, ["cross_entropy"], str(outdir), steps=4, seeds=1)


def _tiny_config(tmp_path):
  config = train_config.default_config()
  config.data.data_dir = str(tmp_path / "tfds")
  config.data.image_size = 16
  config.data.synthetic.num_train = 8
  config.data.synthetic.num_validation = 8
  config.data.synthetic.num_test = 8
  config.train.steps = 4
  config.train.warmup_steps = 1
  return config


def test_failed_runs_are_reported_diverged_ones_not_retried(tmp_path, monkeypatch):
  calls = []

  def fake_train(config, workdir, mesh=None):
    calls.append(config.loss.name)
    if config.loss.name == "focal":
      raise FloatingPointError("Non-finite training loss at step 3")
    raise RuntimeError("boom")

  monkeypatch.setattr(train, "train_and_evaluate", fake_train)
  outdir = tmp_path / "cmp"
  lines = []
  config = _tiny_config(tmp_path)
  summary = compare.run_comparison(
    config, "focal,dice", str(outdir), seeds=1, topology=False, echo=lines.append
  )
  assert calls == ["focal", "dice"]
  assert summary["runs"]["focal"][0]["status"] == "diverged"
  assert summary["runs"]["dice"][0]["status"] == "error"
  assert summary["best"] is None and summary["baseline"] == "focal"
  assert summary["results"]["focal"]["runs"]["0"]["flags"] == ["diverged"]
  assert "[1/2] focal seed 0: diverged" in lines[1] and "[2/2] dice seed 0: failed" in lines[3]
  text = (outdir / "report.md").read_text()
  assert "No run produced a model to evaluate" in text
  assert "`focal` seed 0 (diverged): Non-finite training loss at step 3" in text
  assert "`dice` seed 0 (error): RuntimeError: boom" in text
  # The divergence is a result (same seed, same outcome): only the errored run is retried.
  calls.clear()
  compare.run_comparison(config, "focal,dice", str(outdir), seeds=1, topology=False)
  assert calls == ["dice"]
  with pytest.raises(ValueError, match="baseline 'x' is not one of"):
    compare.run_comparison(config, "dice", str(outdir), baseline="x")
  with pytest.raises(ValueError, match="seeds must be a positive int"):
    compare.run_comparison(config, "dice", str(outdir), seeds=0)


def test_run_state_from_files(tmp_path):
  config = _tiny_config(tmp_path)
  workdir = tmp_path / "run"
  assert compare.run_state(config, str(workdir)) == "new"
  workdir.mkdir()
  # Final metrics without the final checkpoint (killed before the save) are not finished.
  record = {"step": 4, "split": "validation", "dice_mean": 0.5}
  (workdir / "metrics.jsonl").write_text(json.dumps(record) + "\n")
  assert compare.run_state(config, str(workdir)) == "new"
  other = copy.deepcopy(config)
  other.model.features = 8
  (workdir / "config.json").write_text(other.to_json_best_effort())
  with pytest.raises(ValueError, match=r"model\.features: 8 -> 16.*another --outdir"):
    compare.run_state(config, str(workdir))


def test_prediction_grid_volumes_multiclass_and_missing_runs(tmp_path, rng):
  def examples():
    return {
      "image": rng.random((2, 5, 12, 12, 1)).astype(np.float32),
      "label": rng.integers(0, 3, (2, 5, 12, 12)),
      "pred": rng.integers(0, 3, (2, 5, 12, 12)),
      "step": 3,
    }

  runs = {
    "dice": {0: {"eval": {"examples": examples()}}},
    "focal": {0: {"eval": None, "status": "diverged"}},
  }
  path = str(tmp_path / "grid.png")
  assert plots.prediction_grid(runs, path, class_names=["bg", "a", "b"]) == path
  _check_png(path)
  runs["dice"][0]["eval"] = None
  assert plots.prediction_grid(runs, str(tmp_path / "none.png"), class_names="ab") is None
  assert not (tmp_path / "none.png").exists()


def test_figures_are_labelled_and_show_negative_losses(monkeypatch, tmp_path):
  figures = []
  make = plots._figure

  def recording(*args, **kwargs):
    figures.append(make(*args, **kwargs))
    return figures[-1]

  monkeypatch.setattr(plots, "_figure", recording)
  curves = {
    "dice": {"train_step": [1, 2], "train_loss": [0.9, 0.5], "val_step": [2], "val_dice": [0.6]},
    # The boundary loss is negative near its optimum: a log axis would drop it.
    "boundary": {
      "train_step": [1, 2],
      "train_loss": [0.2, -1.5],
      "val_step": [2],
      "val_dice": [0.4],
    },
  }
  plots.learning_curves(
    {k: {0: {"curves": v}, 1: {"curves": v}} for k, v in curves.items()},
    str(tmp_path / "c.png"),
    title="t",
  )
  ax_loss, ax_dice = figures[-1].axes
  assert ax_loss.get_yscale() == "symlog" and "symmetric log" in ax_loss.get_ylabel()
  assert [len(line.get_xdata()) for line in ax_loss.get_lines()] == [2, 2]
  for ax in (ax_loss, ax_dice):
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["dice", "boundary"]
  plots.learning_curves({"dice": {0: {"curves": curves["dice"]}}}, str(tmp_path / "d.png"))
  assert figures[-1].axes[0].get_yscale() == "log"

  rng = np.random.default_rng(0)
  examples = {
    "image": rng.random((2, 8, 8, 3)).astype(np.float32),
    "label": rng.integers(0, 2, (2, 8, 8)),
    "pred": rng.integers(0, 2, (2, 8, 8)),
  }
  plots.prediction_grid(
    {"dice": {0: {"eval": {"examples": examples}}}, "focal": {0: {"eval": {"examples": examples}}}},
    str(tmp_path / "g.png"),
    class_names=("background", "shape"),
    title="t",
  )
  grid = [ax for ax in figures[-1].axes if ax.get_label() != "<colorbar>"]
  assert len(grid) == 2 * 4  # 2 images x (image, truth, dice, focal)
  assert all(ax.get_title() for ax in grid)
  assert [ax.get_ylabel() for ax in grid[::4]] == ["y (pixels)"] * 2
  assert all(ax.get_xlabel() == "x (pixels)" for ax in grid[-4:])
  colorbars = [ax for ax in figures[-1].axes if ax.get_label() == "<colorbar>"]
  assert colorbars and colorbars[0].get_ylabel() == "class"


def test_default_outdir_names_the_data_set():
  config = train_config.default_config()
  assert compare.default_outdir("configs/default.py") == os.path.join("runs", "compare", "default")
  config.data.config = "thin"
  assert compare.default_outdir("configs/default.py", config) == os.path.join(
    "runs", "compare", "default_synthetic_shapes-thin"
  )
  config.data.name, config.data.folder.path = "image_folder", "/data/lesions/"
  assert compare.default_outdir("configs/focal.py", config).endswith("focal_image_folder-lesions")
  config.data.name = "oxford_iiit_pet"
  assert compare.default_outdir("c/x.py", config).endswith("x_oxford_iiit_pet")
