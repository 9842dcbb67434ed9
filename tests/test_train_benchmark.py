"""benchmarks/train.py runs (quick mode) and writes its JSON and its BENCHMARKS.md section."""

import importlib.util
import json
import pathlib

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_train_benchmark_quick(tmp_path, capsys):
  spec = importlib.util.spec_from_file_location("_bench_train", ROOT / "benchmarks" / "train.py")
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  out = tmp_path / "train.json"
  md = tmp_path / "BENCHMARKS.md"
  md.write_text("# Benchmarks\n\n## Losses\n\nkept table\n\n## Training\n\nold numbers\n")
  bench.main(
    [
      "--quick",
      "--cpu_devices=0",  # JAX is already set up here (8 test devices).
      f"--data_dir={tmp_path / 'tfds'}",
      "--json",
      str(out),
      "--markdown",
      str(md),
    ]
  )
  result = json.loads(out.read_text())
  r = result["result"]
  assert r["num_devices"] == len(jax.devices()) and r["global_batch"] == 8
  assert r["compile_s"] > 0 and r["images_per_s"] > 0 and r["step_ms_median"] > 0
  assert r["images_per_s"] == pytest.approx(8 / (r["step_ms_median"] / 1e3), rel=1e-9)
  assert r["process_peak_rss_bytes"] > 0 and r["xla_step_bytes_per_device"] > 0
  assert r["model"]["parameters"] > 0 and r["steps_timed"] == 3
  text = md.read_text()
  assert "kept table" in text and "old numbers" not in text
  assert "| throughput |" in text and "images/s" in text and "| compile time (train step) |" in text
  assert text.index("## Losses") < text.index("## Training")
  assert "images/s" in capsys.readouterr().out


def _load(name):
  spec = importlib.util.spec_from_file_location(
    f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py"
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.torch
def test_train_benchmark_torch_beside_jax(tmp_path):
  """--torch: the same U-Net in PyTorch (equal parameter counts), both sides timed, one table."""
  pytest.importorskip("torch")  # the optional [torch] extra
  bench = _load("train")
  out, md = tmp_path / "train.json", tmp_path / "BENCHMARKS.md"
  bench.main(
    ["--quick", "--torch", "--steps=2", "--cpu_devices=0", f"--data_dir={tmp_path / 'tfds'}"]
    + [f"--json={out}", f"--markdown={md}"]
  )
  result = json.loads(out.read_text())
  (row,) = result["configs"]
  j, t = row["jax"], row["torch"]
  assert j["parameters"] == t["parameters"] == result["result"]["model"]["parameters"] > 0
  for side in (j, t):
    assert side["images_per_sec"] == pytest.approx(8 / (side["step_ms_median"] / 1e3))
    assert side["steps_timed"] == 2 and side["first_step_s"] > 0
    assert side["peak_rss_delta_bytes"] >= 0
  assert j["compile_s"] > 0 and j["xla_step_bytes_per_device"] > 0
  assert row["jax_over_torch_images_per_sec"] == pytest.approx(
    j["images_per_sec"] / t["images_per_sec"]
  )
  assert abs(j["final_loss"] - t["final_loss"]) < 10  # Both finite dice_ce values.
  assert result["result"]["images_per_s"] == j["images_per_sec"]
  text = md.read_text()
  assert "## Training: seg_jax vs PyTorch" in text and "seg_jax / PyTorch (" in text
  assert "## Training\n" in text and "| throughput |" in text


@pytest.mark.torch
def test_torch_unet_matches_seg_jax_parameter_count():
  """The PyTorch twin has seg_jax's parameter count at several sizes (layer for layer)."""
  pytest.importorskip("torch")
  import sys

  from flax import nnx

  from seg_jax.models import UNet

  sys.path.insert(0, str(ROOT / "benchmarks"))
  import torch_unet

  for cin, classes, features, depth in ((3, 1, 16, 4), (1, 4, 8, 3)):
    net = nnx.eval_shape(
      lambda cin=cin, classes=classes, features=features, depth=depth: UNet(
        cin, classes, features=features, depth=depth, rngs=nnx.Rngs(0)
      )
    )
    n_jax = sum(x.size for x in jax.tree.leaves(nnx.state(net, nnx.Param)))
    twin = torch_unet.TorchUNet(cin, classes, features=features, depth=depth)
    assert torch_unet.parameter_count(twin) == n_jax


def test_loss_in_step_quick(tmp_path):
  """Each loss's train step as a ratio to cross_entropy's; per-example targets precomputed."""
  bench = _load("loss_in_step")
  out, md = tmp_path / "lis.json", tmp_path / "BENCHMARKS.md"
  md.write_text("# Benchmarks\n\n## Training\n\nkept\n")
  result = bench.main(
    ["--quick", "--losses=boundary", "--cpu_devices=0", f"--data_dir={tmp_path / 'tfds'}"]
    + [f"--json={out}", f"--markdown={md}"]
  )
  rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
  assert set(rows) == {"cross_entropy", "boundary"}
  assert rows["cross_entropy"]["ratio_to_cross_entropy"] == 1.0
  assert rows["cross_entropy"]["goal_met"] is None
  b = rows["boundary"]
  assert b["precomputed_targets"] == ["distance_maps"] and b["finite"]
  assert b["goal"] == 1.5 and b["goal_met"] == (b["ratio_to_cross_entropy"] <= 1.5)
  assert b["ratio_to_cross_entropy"] > 0 and b["step_ms_median"] > 0
  assert result["rounds"] == 2
  text = md.read_text()
  assert "kept" in text and "## Losses inside the train step" in text and "| boundary |" in text


@pytest.mark.torch
def test_train_variants_quick(tmp_path):
  """The swapped layers equal flax's; the trainer-step rows are timed against PyTorch's step."""
  pytest.importorskip("torch")
  bench = _load("train_variants")
  diffs = bench.check_patches()
  assert all(v < 1e-4 for v in diffs.values())
  out = bench.main(["--quick", "--only_step", "--cpu_devices=0", f"--data_dir={tmp_path}"])
  rows = {r["name"]: r for r in out["rows"]}
  assert {"torch: full step", "jax: trainer step"} <= set(rows)
  assert all(r["ms_median"] > 0 and r["ratio_to_torch_step"] > 0 for r in rows.values())
  assert set(out["first_step_loss"]) >= {"jax: trainer step"}
