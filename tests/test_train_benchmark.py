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
