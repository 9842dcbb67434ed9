r"""generalized_dice: Generalised Dice loss (Sudre et al. 2017), inverse squared volume class
weights.

Run it with::

  python launch.py --config=configs/generalized_dice.py

The default experiment (``configs/default.py``) with the loss ``generalized_dice``; its options are
those of ``seg_jax.losses.get("generalized_dice", ...)``, any of which can be overridden, e.g.
``--config.loss.options.include_background=...``. Outputs go to ``runs/generalized_dice``.
"""

from configs import default


def get_config():
  """configs/default.py with the generalized_dice loss."""
  config = default.get_config()
  config.loss.name = "generalized_dice"
  config.loss.options.include_background = True
  config.loss.options.smooth = 1e-5
  return config
