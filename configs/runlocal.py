r"""A tiny variant of the default config for tests and smoke runs (seconds on a CPU).

Run it with::

  python launch.py --config=configs/runlocal.py

A 4-feature, 2-level U-Net on 16x16 synthetic images (64 training, 16 validation, 16 test
examples), 8 steps of batch 8, evaluation and checkpoints every 4 steps.
"""

from configs import default


def get_config():
  """The runlocal config (see the module docstring)."""
  config = default.get_config()
  config.loss.name = "dice_ce"
  config.model.features = 4
  config.model.depth = 2
  config.model.num_groups = 2
  config.data.image_size = 16
  config.data.synthetic.num_train = 64
  config.data.synthetic.num_validation = 16
  config.data.synthetic.num_test = 16
  config.data.num_threads = 1
  config.train.steps = 8
  config.train.batch_size = 8
  config.train.learning_rate = 1e-2
  config.train.warmup_steps = 2
  config.train.log_every = 2
  config.train.eval_every = 4
  config.train.checkpoint_every = 4
  config.train.num_plot_examples = 2
  config.train.progress_bar = False
  return config
