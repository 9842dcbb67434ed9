"""Keeps the benchmark scripts from rotting: run them in their quick modes at tiny shapes."""

import json
import pathlib
import subprocess
import sys

from seg_jax import losses

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_losses_benchmark_quick(tmp_path):
  out = tmp_path / "losses.json"
  md = tmp_path / "BENCHMARKS.md"
  md.write_text("# Benchmarks\n\n## Losses\n\nold table\n\n## Training\n\nkept section\n")
  proc = subprocess.run(
    [sys.executable, "benchmarks/losses.py", "--quick", "--json", str(out), "--markdown", str(md)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert {"cpu", "cores", "jax", "date"} <= set(result["machine"])
  rows = {r["name"]: r for r in result["shapes"][0]["rows"]}
  errors = {name: r["error"] for name, r in rows.items() if "error" in r}
  assert not errors, errors
  # Every registry loss is timed, next to optax and the exp floor.
  assert set(losses.names()) <= set(rows)
  assert rows["floor: sum(exp(logits))"]["fwd_ms"] > 0
  assert rows["cross_entropy"]["optax"] == "optax softmax_cross_entropy_with_integer_labels"
  assert rows["dice"]["speedup_vs_optax"] > 0 and rows["dice"]["vs_floor"] > 0
  assert rows["dice (checked)"]["vs_unchecked"] > 0
  assert result["lovasz_scaling"]["points"]
  text = md.read_text()
  assert "old table" not in text and "kept section" in text
  assert text.index("## Losses") < text.index("## Training")
  assert "| cross_entropy |" in text


def test_overlap_formulations_benchmark_quick(tmp_path):
  """Every formulation computes the same dice as dice_loss (checked inside) and is timed."""
  out = tmp_path / "formulations.json"
  md = tmp_path / "BENCHMARKS.md"
  md.write_text("# Benchmarks\n\n## Losses\n\nkept section\n")
  proc = subprocess.run(
    [
      sys.executable,
      "benchmarks/overlap_formulations.py",
      "--quick",
      "--json",
      str(out),
      "--markdown",
      str(md),
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads(out.read_text())["shapes"][0]["rows"]
  names = [r["name"] for r in rows]
  assert names[0].startswith("floor") and names[1] == "seg_jax dice_loss (shipped)"
  assert len(names) >= 8 and all(r["ms"] > 0 for r in rows)
  text = md.read_text()
  assert "kept section" in text and "## Dice statistics: formulations compared" in text
  assert text.index("## Losses") < text.index("## Dice statistics")


def test_seeds_benchmark_quick(tmp_path):
  """Seeds in turn and as one vmapped program: both timed, and the same losses computed."""
  proc = subprocess.run(
    [sys.executable, "benchmarks/seeds.py", "--quick", "--seeds=2", "--repeats=1"]
    + ["--out", str(tmp_path)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((tmp_path / "seeds_quick.json").read_text())
  assert result["in_turn_s"] > 0 and result["vmapped_s"] > 0
  assert len(result["losses_in_turn"]) == 2
  for a, b in zip(result["losses_in_turn"], result["losses_vmapped"], strict=True):
    assert abs(a - b) <= 1e-5 * max(1.0, abs(a))
  assert "| one vmapped program |" in proc.stdout


def test_heavy_losses_benchmark_quick(tmp_path):
  """The heavy-loss goals are computed from rows timed in one run (torch rows need --torch)."""
  out = tmp_path / "heavy.json"
  md = tmp_path / "BENCHMARKS.md"
  md.write_text("# Benchmarks\n\n## Losses\n\nkept section\n")
  proc = subprocess.run(
    [sys.executable, "benchmarks/heavy_losses.py", "--quick", "--json", str(out)]
    + ["--markdown", str(md)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  first = result["shapes"][0]
  names = [r["name"] for r in first["rows"]]
  assert names == ["lovasz", "lovasz (before)", "cldice", "dice"]
  rows = {r["name"]: r for r in first["rows"]}
  # The previous sort computes the same loss as the shipped one.
  assert abs(rows["lovasz"]["loss_value"] - rows["lovasz (before)"]["loss_value"]) < 1e-6
  assert all(r["fwd_ms"] > 0 and r["grad_ms"] > 0 for r in first["rows"])
  assert any(g["goal"].startswith("cldice") for g in first["goals"])
  text = md.read_text()
  assert "kept section" in text and "## Heavy losses" in text
