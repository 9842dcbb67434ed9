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


def test_train_benchmark_linen_beside_nnx(tmp_path):
  spec = importlib.util.spec_from_file_location("_bench_train", ROOT / "benchmarks" / "train.py")
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  out, md = tmp_path / "apis.json", tmp_path / "BENCHMARKS.md"
  bench.main(
    [
      "--quick",
      "--api=linen,nnx",
      "--steps=2",
      "--cpu_devices=0",
      f"--data_dir={tmp_path / 'tfds'}",
      f"--json={out}",
      f"--markdown={md}",
    ]
  )
  result = json.loads(out.read_text())
  linen, nnx = result["apis"]["linen"], result["apis"]["nnx"]
  # Same network: same parameter count; both steps trained on the same batch.
  assert linen["model"]["parameters"] == nnx["model"]["parameters"] > 0
  assert linen["steps_timed"] == nnx["steps_timed"] == 2
  for r in (linen, nnx):
    assert len(r["compile_s_all"]) == 2 and r["compile_s"] == min(r["compile_s_all"]) > 0
  q = result["ratio_nnx_over_linen"]
  assert q["step_ms_median"] == pytest.approx(nnx["step_ms_median"] / linen["step_ms_median"])
  assert q["compile_s"] == pytest.approx(nnx["compile_s"] / linen["compile_s"])
  assert result["result"] == nnx
  text = md.read_text()
  assert "## Training: NNX vs Linen" in text and "| NNX / Linen |" in text
