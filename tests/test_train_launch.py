"""launch.py end to end in subprocesses, against one uninterrupted run in this process.

* Resume: one workdir goes through run 1, killed with SIGKILL just after its first checkpoint;
  run 2, which resumes from that checkpoint and is sent SIGTERM once it trains, so it saves a
  checkpoint and exits; run 3, which resumes from that one and finishes.
* Multi-host: two processes (``jax.distributed`` over 127.0.0.1, one CPU device each).

Both must end with the final metrics, validation records and parameters of the same training
run uninterrupted in one process on a 2-device mesh (the reference, also a ``launch.py``
subprocess).
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from test_train import runlocal
from test_train_parallel import final_params

from seg_jax import data as seg_data
from seg_jax.training.outputs import read_metrics

ROOT = pathlib.Path(__file__).resolve().parent.parent
STEPS = 40
OVERRIDES = {"steps": STEPS, "checkpoint_every": 4, "eval_every": 16, "log_every": 4}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
  """The data (built once, before any subprocess), a compilation cache for the subprocesses,
  and the uninterrupted reference run.

  The reference runs in a subprocess too (``launch.py --cpu_devices=2``), not in this process:
  this process has the 8 test devices, and XLA's CPU code for a 2-device mesh differs slightly
  with the process's device count (float32 sums in another order; measured: about 4e-7 on the
  parameters after 10 steps, and about 8e-6 after 40 steps of this run), which is not what
  these tests are about."""
  base = tmp_path_factory.mktemp("launch")
  config = runlocal(base / "tfds", **OVERRIDES)
  seg_data.load(config.data)
  reference = base / "reference"
  partial = {"base": base}
  proc = subprocess.run(
    launch_command(partial, f"--workdir={reference}", "--cpu_devices=2"),
    env=subprocess_env(partial),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stdout[-3000:]
  return {**partial, "config": config, "reference": reference, "final": final_line(proc.stdout)}


def launch_command(shared, *extra) -> list[str]:
  return [
    sys.executable,
    str(ROOT / "launch.py"),
    f"--config={ROOT / 'configs' / 'runlocal.py'}",
    f"--config.data.data_dir={shared['base'] / 'tfds'}",
    *(f"--config.train.{k}={v}" for k, v in OVERRIDES.items()),
    *extra,
  ]


def subprocess_env(shared) -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  env.pop("JAX_NUM_CPU_DEVICES", None)
  env.pop("XLA_FLAGS", None)
  # Later subprocesses reuse the programs compiled by earlier ones.
  env["JAX_COMPILATION_CACHE_DIR"] = str(shared["base"] / "jax_cache")
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  return env


def checkpoint_steps(workdir) -> list[int]:
  path = pathlib.Path(workdir) / "checkpoints"
  if not path.exists():
    return []
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit())


def final_line(stdout: str) -> dict:
  return json.loads(stdout.split("Final: ")[1].splitlines()[0])


def assert_matches_reference(shared, workdir, final, *, rtol, preempted_at=None):
  ref_final, reference = shared["final"], shared["reference"]
  assert final.keys() == ref_final.keys()
  for key, value in ref_final.items():
    assert final[key] == pytest.approx(value, rel=rtol, abs=1e-9), key

  def evaluations(d):
    return [r for r in read_metrics(d) if r["split"] in ("validation", "test")]

  assert [r["step"] for r in evaluations(workdir)] == [16, 32, 40, 40]
  for a, b in zip(evaluations(workdir), evaluations(reference), strict=True):
    assert a.keys() == b.keys() and a["split"] == b["split"]
    for key in a.keys() - {"split"}:
      assert a[key] == pytest.approx(b[key], rel=rtol, abs=1e-9), key
  # Train records every 4 steps, plus one at the SIGTERM step (the partial window is written,
  # not lost); the step-weighted losses of each 4-step window equal the reference's.
  train = [r for r in read_metrics(workdir) if r["split"] == "train"]
  logged = list(range(4, STEPS + 1, 4))
  expected = sorted({*logged, *([preempted_at] if preempted_at else [])})
  assert [r["step"] for r in train] == expected
  ref_loss = {r["step"]: r["loss"] for r in read_metrics(reference) if r["split"] == "train"}
  window_sum, previous = {}, 0
  for r in train:
    end = -(-r["step"] // 4) * 4  # The 4-step window the record falls in.
    window_sum[end] = window_sum.get(end, 0.0) + r["loss"] * (r["step"] - previous)
    previous = r["step"]
  for end in logged:
    assert window_sum[end] / 4 == pytest.approx(ref_loss[end], rel=10 * rtol), end
  config = shared["config"]
  for a, b in zip(
    jax.tree.leaves(final_params(config, workdir, STEPS)),
    jax.tree.leaves(final_params(config, reference, STEPS)),
    strict=True,
  ):
    np.testing.assert_allclose(a, b, rtol=10 * rtol, atol=1e-6)  # float32 rounding


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigkill_and_sigterm_then_resume_match_uninterrupted(shared, tmp_path):
  env = subprocess_env(shared)
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  workdir = cwd / "runs" / "runlocal"  # launch.py's default: runs/<config name>
  cmd = launch_command(shared, "--cpu_devices=2")
  stderr = open(tmp_path / "stderr.txt", "w")  # noqa: SIM115

  # Run 1: SIGKILL as soon as the first checkpoint is complete (on disk under its final name).
  proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
  deadline = time.time() + 300
  while not checkpoint_steps(workdir) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  out1 = proc.communicate(timeout=60)[0]
  assert proc.returncode == -signal.SIGKILL, (proc.returncode, out1)
  assert f"-> workdir {workdir}" in out1
  killed_at = checkpoint_steps(workdir)
  assert killed_at and max(killed_at) < STEPS
  assert not any(r["step"] == STEPS for r in read_metrics(workdir))  # It did not finish.

  # Run 2: resumes from the latest complete checkpoint; SIGTERM once it is training.
  proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if line.startswith("First step"):
      proc.send_signal(signal.SIGTERM)
      break
  out2 = "".join(lines) + proc.communicate(timeout=300)[0]
  assert f"Resumed from the checkpoint at step {max(killed_at)} " in out2, out2
  assert proc.returncode == 143, (proc.returncode, out2)
  saved = int(re.search(r"SIGTERM: saved a checkpoint at step (\d+)", out2).group(1))
  assert max(killed_at) < saved < STEPS and max(checkpoint_steps(workdir)) == saved

  # Run 3: resumes from the SIGTERM checkpoint and finishes.
  proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
  stderr.close()
  assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
  assert f"Resumed from the checkpoint at step {saved} " in proc.stdout
  assert_matches_reference(
    shared, workdir, final_line(proc.stdout), rtol=1e-6, preempted_at=saved if saved % 4 else None
  )


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_processes_train_like_one(shared, tmp_path):
  workdir = tmp_path / "run"
  port = free_port()
  procs = []
  for process_id in (0, 1):
    cmd = launch_command(
      shared,
      f"--workdir={workdir}",
      "--distributed",
      f"--coordinator_address=127.0.0.1:{port}",
      "--num_processes=2",
      f"--process_id={process_id}",
      "--cpu_devices=1",
    )
    log = open(tmp_path / f"process{process_id}.txt", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=subprocess_env(shared), stdout=log, stderr=subprocess.STDOUT)
    procs.append((proc, log))
  for proc, log in procs:
    try:
      proc.wait(timeout=400)
    finally:
      if proc.poll() is None:
        proc.kill()
      log.close()
  outputs = [(tmp_path / f"process{i}.txt").read_text() for i in (0, 1)]
  for (proc, _), out in zip(procs, outputs, strict=True):
    assert proc.returncode == 0, out[-3000:]
  # Process 0 reports and writes; process 1 trains silently.
  assert "2 device(s) (2 process(es))" in outputs[0]
  assert "Final: " in outputs[0] and "Final: " not in outputs[1]
  assert_matches_reference(shared, workdir, final_line(outputs[0]), rtol=1e-5)
