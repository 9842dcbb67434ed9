"""Entry points of the trainer (:mod:`seg_jax.training`): ``train.train_and_evaluate``, and
``train.train_seeds_and_evaluate`` (several seeds as one vmapped program,
:mod:`seg_jax.training.seeds`).

Example::

  from seg_jax import train
  from seg_jax.training import config as train_config
  config = train_config.default_config()
  config.loss.name = 'focal'
  metrics = train.train_and_evaluate(config, '/tmp/focal_run')
  metrics['dice_mean']
"""

from seg_jax.training.devices import AXIS, make_mesh
from seg_jax.training.loop import evaluate, train_and_evaluate
from seg_jax.training.seeds import train_seeds_and_evaluate
from seg_jax.training.state import (
  TrainState,
  abstract_state,
  apply_model,
  build_model,
  init_seed_states,
  init_state,
  make_optimizer,
  split_model,
)
from seg_jax.training.steps import (
  build_loss,
  make_checked_eval_step,
  make_eval_step,
  make_train_step,
)

__all__ = [
  "AXIS",
  "TrainState",
  "abstract_state",
  "apply_model",
  "build_loss",
  "build_model",
  "evaluate",
  "init_seed_states",
  "init_state",
  "make_checked_eval_step",
  "make_eval_step",
  "make_mesh",
  "make_optimizer",
  "make_train_step",
  "split_model",
  "train_and_evaluate",
  "train_seeds_and_evaluate",
]
