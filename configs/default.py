r"""Default experiment: U-Net (16 base features, 4 levels) on synthetic_shapes/balanced, dice_ce.

Run it with::

  python launch.py --config=configs/default.py

Outputs go to ``runs/default`` (``--workdir`` to change). Any field can be overridden on the
command line, e.g. ``--config.train.steps=200 --config.loss.name=focal``. The fields and their
meaning are documented in :mod:`seg_jax.training.config` (``loss``, ``model``, ``train``) and
:func:`seg_jax.data.default_config` (``data``). The per-loss files next to this one derive from
it and change only the loss.
"""

from seg_jax.training import config as train_config


def get_config():
  """The default training config (see the module docstring)."""
  return train_config.default_config()
