r"""Checkpoints of the training state with orbax: latest-K plus the best by validation Dice.

:class:`Checkpointer` wraps one ``orbax.checkpoint.CheckpointManager`` in ``<workdir>/checkpoints``:

* :meth:`Checkpointer.save` writes the state at a step (asynchronously by default: the arrays are
  copied to host memory and written by a background thread while training goes on), with the
  validation metrics when the step had an evaluation.
* Preservation: the ``keep`` most recent checkpoints, plus the one with the highest
  ``best_metric`` (validation ``dice_mean``) among those saved with metrics (orbax
  ``AnyPreservationPolicy(LatestN, BestN)``). The metrics are written with each checkpoint
  (``null`` for a step without evaluation), so the ranking survives restarts. The latest
  checkpoint is therefore always there to resume from, even when it is not the best.
* :meth:`Checkpointer.restore` reads a step (default: the latest) into the structure, dtypes and
  shardings of an example state, so optax states keep their types and arrays land on the mesh.

A checkpoint is written to a temporary directory and renamed when complete, so a process killed
mid-save leaves the previous checkpoints intact and the partial one is ignored.

:class:`Preemption` notices SIGTERM, after which the loop saves a checkpoint and returns.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as ocm

PyTree = Any


def _shapes(tree: PyTree) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Array shapes by path; a path is the tuple of its key names, so a dataclass field, a dict
  key and a (named) tuple index read the same in a state and in checkpoint metadata."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    out[tuple(re.findall(r"\w+", jax.tree_util.keystr(path)))] = tuple(leaf.shape)
  return out


class Checkpointer:
  """Saves and restores training states in ``directory``.

  Args:
    directory: checkpoint directory (created if missing); an absolute path is used.
    keep: number of most recent checkpoints kept.
    best_metric: metric (a key of the metrics passed to :meth:`save`) whose highest value marks
      the best checkpoint, which is kept as well; ``None`` keeps only the latest ``keep``.
    async_save: save in a background thread.
  """

  def __init__(
    self,
    directory: str,
    *,
    keep: int,
    best_metric: str | None = "dice_mean",
    async_save: bool = True,
  ):
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    policies: list = [ocm.LatestN(n=keep)]
    if best_metric is not None:
      policies.append(
        ocm.BestN(
          get_metric_fn=self._score,
          reverse=False,  # ascending: the last ones (kept) are the highest.
          n=1,
          keep_checkpoints_without_metrics=False,
        )
      )
    options = ocp.CheckpointManagerOptions(
      preservation_policy=ocm.AnyPreservationPolicy(policies),
      # best_fn makes orbax write each checkpoint's metrics next to it, so the ranking
      # survives a restart; which checkpoints are kept is decided by the policy above.
      best_fn=None if best_metric is None else self._score,
      best_mode="max",
      enable_async_checkpointing=async_save,
      create=True,
    )
    self.manager = ocp.CheckpointManager(
      self.directory,
      item_handlers={"state": ocp.StandardCheckpointHandler()},
      options=options,
    )

  def latest_step(self) -> int | None:
    """The most recent complete checkpoint's step, or ``None``."""
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The kept step with the highest ``best_metric`` (``None`` if no checkpoint has metrics);
    the latest of equal ones."""
    if self.best_metric is None:
      return None
    best = None
    for step in self.all_steps():
      metrics = self.manager.metrics(step)
      value = None if metrics is None else metrics.get(self.best_metric)
      if value is not None and (best is None or value >= best[0]):
        best = (value, step)
    return None if best is None else best[1]

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def _score(self, metrics) -> float:
    value = metrics.get(self.best_metric)
    return float("-inf") if value is None else float(value)

  def save(self, step: int, state: PyTree, metrics: dict | None = None) -> None:
    """Saves ``state`` at ``step``, with the evaluation ``metrics`` of that step if it had one
    (they rank the checkpoint; without them it is recorded as not evaluated)."""
    if self.best_metric is not None:
      value = None if metrics is None else metrics.get(self.best_metric)
      metrics = {self.best_metric: None if value is None else float(value)}
    else:
      metrics = None
    self.manager.save(
      int(step),
      args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
      metrics=metrics,
      force=True,
    )

  def restore(self, target: PyTree, step: int | None = None) -> PyTree:
    """Restores ``step`` (default: latest) with the structure, dtypes and shardings of
    ``target`` (a state or its ``jax.ShapeDtypeStruct`` tree)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {self.directory}.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    self._check_shapes(step, abstract)
    restored = self.manager.restore(
      int(step), args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
    )
    return restored["state"]

  def _check_shapes(self, step: int, abstract: PyTree) -> None:
    """Raises ValueError naming the first array whose path or shape differs between the
    checkpoint at ``step`` and ``abstract``."""
    saved = _shapes(self.manager.item_metadata(step)["state"])
    wanted = _shapes(abstract)
    for path in sorted(saved.keys() | wanted.keys()):
      if saved.get(path) != wanted.get(path):
        name = "/".join(path)
        raise ValueError(
          f"Checkpoint step {step} in {self.directory} does not fit the requested state: "
          f"{name} has shape {saved.get(path, 'missing')} in the checkpoint and "
          f"{wanted.get(path, 'missing')} in the state."
        )

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are written."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()


class Preemption:
  """Notices SIGTERM: a local signal handler (one process) or JAX's preemption sync point
  (several processes, where the JAX runtime catches the signal and agrees on a step).

  Kept beside orbax rather than replaced by ``CheckpointManager.reached_preemption``, which only
  knows the sync point: a single process (the CPU and one-GPU case) needs the signal handler.
  """

  def __init__(self):
    self.flag = False
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    self.flag = True

  def reached(self, step: int) -> bool:
    """Whether the run should save at ``step`` and stop."""
    if self.flag:
      return True
    if jax.process_count() > 1:
      try:
        return multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # The preemption service is disabled.
        return False
    return False

  def close(self):
    """Restores the previous SIGTERM handler."""
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
