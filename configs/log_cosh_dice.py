r"""log_cosh_dice: Log-cosh Dice loss (Jadon 2020).

Run it with::

  python launch.py --config=configs/log_cosh_dice.py

The default experiment (``configs/default.py``) with the loss ``log_cosh_dice``; its options are
those of ``seg_jax.losses.get("log_cosh_dice", ...)``, any of which can be overridden, e.g.
``--config.loss.options.include_background=...``. Outputs go to ``runs/log_cosh_dice``.
"""

from configs import default


def get_config():
  """configs/default.py with the log_cosh_dice loss."""
  config = default.get_config()
  config.loss.name = "log_cosh_dice"
  config.loss.options.include_background = True
  config.loss.options.smooth = 1e-5
  return config
