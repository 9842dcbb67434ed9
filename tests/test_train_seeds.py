"""Seeds as one vmapped program (seg_jax.training.seeds, compare --seeds_mode=vmap).

The key check: two seeds trained as one program give, seed by seed, what two runs in turn give
(same initialisation, same batches): the same records, metrics and final parameters to float
rounding, and the same files in each run directory.
"""

import copy
import importlib.util
import json
import os
import pathlib
import shutil

import jax
import numpy as np
import pytest
from absl import flags

from seg_jax import compare, train
from seg_jax.choosing import run as choosing_run
from seg_jax.training.checkpoint import Checkpointer
from seg_jax.training.outputs import read_metrics

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Records that measure the machine, not the computation.
_SPEED = ("steps_per_sec", "images_per_sec")


def _config(data_dir, seed: int, **train_overrides):
  spec = importlib.util.spec_from_file_location("_runlocal", ROOT / "configs" / "runlocal.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()  # A 4-feature U-Net on 16x16 images, batch 8.
  config.data.data_dir = str(data_dir)
  config.loss.name = "dice"  # Its batch sums are psum-ed over the devices inside the vmap.
  t = config.train
  t.steps, t.eval_every, t.checkpoint_every, t.log_every, t.warmup_steps = 4, 2, 2, 1, 1
  t.num_plot_examples, t.seed = 1, seed
  for key, value in train_overrides.items():
    t[key] = value
  return config


def _close(a, b, where):
  """Records or metrics dicts equal up to float32 rounding (speed records aside)."""
  assert set(a) == set(b), where
  for key in a:
    if key in _SPEED or a[key] is None:
      assert (a[key] is None) == (b[key] is None), (where, key)
    elif isinstance(a[key], float):
      assert a[key] == pytest.approx(b[key], rel=2e-5, abs=1e-6), (where, key)
    else:
      assert a[key] == b[key], (where, key)


def _final_params(config, workdir, mesh):
  model = train.build_model(config, 2, (16, 16, 3))
  tx, _ = train.make_optimizer(config.train)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=2)
  try:
    return ckpt.all_steps(), ckpt.restore(train.abstract_state(model, tx, mesh)).params
  finally:
    ckpt.close()


def test_vmapped_seeds_match_runs_in_turn(tmp_path):
  data_dir, mesh = tmp_path / "tfds", train.make_mesh(jax.devices()[:2])
  # The vmapped group uses its checked step once, then the plain one; the runs in turn use the
  # checked step throughout (it computes the same values) to compile one step fewer each.
  vmapped = [_config(data_dir, s, check_inputs_steps=1) for s in (0, 1)]
  workdirs = [str(tmp_path / f"vmap{s}") for s in (0, 1)]
  results = train.train_seeds_and_evaluate(vmapped, workdirs, mesh=mesh)
  for s in (0, 1):
    config = _config(data_dir, s, check_inputs_steps=4)
    reference = train.train_and_evaluate(config, str(tmp_path / f"turn{s}"), mesh=mesh)
    _close(results[s], reference, f"seed {s} final metrics")
    got, want = read_metrics(workdirs[s]), read_metrics(tmp_path / f"turn{s}")
    assert [(r["step"], r["split"]) for r in got] == [(r["step"], r["split"]) for r in want]
    for g, w in zip(got, want, strict=True):
      _close(g, w, f"seed {s} record {w['step']} {w['split']}")
    assert sorted(os.listdir(workdirs[s])) == sorted(os.listdir(tmp_path / f"turn{s}"))
    stored = json.loads((pathlib.Path(workdirs[s]) / "config.json").read_text())
    assert stored["train"] == vmapped[s].train.to_dict()
    steps, params = _final_params(config, workdirs[s], mesh)
    ref_steps, ref_params = _final_params(config, str(tmp_path / f"turn{s}"), mesh)
    assert steps == ref_steps == [2, 4]
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
  # The two seeds are different runs (their own initialisation and batches).
  assert read_metrics(workdirs[0])[0]["loss"] != read_metrics(workdirs[1])[0]["loss"]

  # A group resumes from one step: seeds whose checkpoints stand at different steps are refused.
  shutil.rmtree(os.path.join(workdirs[1], "checkpoints", "4"))
  with pytest.raises(ValueError, match=r"different steps .*vmap0: 4, .*vmap1: 2"):
    train.train_seeds_and_evaluate(vmapped, workdirs, mesh=mesh)


def test_a_group_differs_in_the_seed_only(tmp_path):
  configs = [_config(tmp_path, 0), _config(tmp_path, 1, learning_rate=0.5)]
  dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
  with pytest.raises(ValueError, match=r"train.seed only; seed 1 differs .*train.learning_rate"):
    train.train_seeds_and_evaluate(configs, dirs)
  with pytest.raises(ValueError, match=r"seeds \[0, 0\] .* must be distinct"):
    train.train_seeds_and_evaluate([configs[0], configs[0]], dirs)
  with pytest.raises(ValueError, match="one workdir per config"):
    train.train_seeds_and_evaluate(configs, dirs[:1])


def test_compare_vmap_mode_groups_the_seeds_of_a_loss(tmp_path, monkeypatch):
  groups, alone = [], []

  def fake_group(configs, workdirs, mesh=None):
    name, seeds = configs[0].loss.name, [c.train.seed for c in configs]
    groups.append((name, seeds))
    assert workdirs == [compare.run_dir(str(tmp_path / "cmp"), name, s) for s in seeds]
    if name == "focal":
      raise ValueError("labels hold 255")  # A failure of the group: every seed of it.
    return [FloatingPointError("Training diverged at step 2") if s == 0 else {} for s in seeds]

  monkeypatch.setattr(train, "train_seeds_and_evaluate", fake_group)
  monkeypatch.setattr(train, "train_and_evaluate", lambda c, w, **k: alone.append(c.train.seed))
  config = copy.deepcopy(_config(tmp_path / "tfds", 0))
  config.data.synthetic.num_validation = config.data.synthetic.num_test = 8
  outdir, lines = tmp_path / "cmp", []
  kwargs = dict(seeds=3, seeds_mode="vmap", topology=False, echo=lines.append)
  summary = compare.run_comparison(config, "dice,focal", str(outdir), **kwargs)
  assert groups == [("dice", [0, 1, 2]), ("focal", [0, 1, 2])] and alone == []
  assert lines[0] == (
    f"[1,2,3/6] dice seeds 0, 1, 2: training as one vmapped program (4 steps) in {outdir / 'dice'}."
  )
  status = {n: [summary["runs"][n][s]["status"] for s in range(3)] for n in ("dice", "focal")}
  assert status == {"dice": ["diverged", "trained", "trained"], "focal": ["error"] * 3}
  assert "ValueError: labels hold 255" in summary["runs"]["focal"][2]["error"]
  info = json.loads((outdir / "dice" / "seed1" / choosing_run.RUN_FILE).read_text())
  assert info["seeds_mode"] == "vmap" and info["status"] == "trained"
  assert summary["seeds_mode"] == "vmap"
  assert "(`--seeds_mode=vmap`)" in (outdir / "report.md").read_text()

  # Again: the diverged seed is a result; the others (no final records: not finished) train
  # again, grouped; a seed left alone in its group trains in turn.
  groups.clear()
  compare.run_comparison(config, "dice", str(outdir), **kwargs)
  assert groups == [("dice", [1, 2])] and alone == []
  # Seed 2 is partial (a checkpoint at step 2), seed 1 new...
  monkeypatch.setattr(choosing_run, "_latest_checkpoint", lambda w: 2 if "seed2" in w else None)
  groups.clear()
  compare.run_comparison(config, "dice", str(outdir), **kwargs)
  assert groups == [] and alone == [1, 2]  # ...so each is alone in its group: in turn.

  with pytest.raises(ValueError, match=r"seeds_mode must be one of 'sequential', 'vmap'.*'vmapp'"):
    compare.run_comparison(config, "dice", str(outdir), seeds_mode="vmapp")
  argv = ["seg_jax.compare", f"--config={ROOT / 'configs' / 'default.py'}", "--losses=dice"]
  flag_values = flags.FlagValues()
  compare.define_flags(flag_values, argv)
  with pytest.raises(flags.IllegalFlagValueError, match="seeds_mode"):
    flag_values([*argv, "--seeds_mode=parallel"])
