r"""dice_focal: Dice + focal.

Run it with::

  python launch.py --config=configs/dice_focal.py

The default experiment (``configs/default.py``) with the loss ``dice_focal``; its options are those
of ``seg_jax.losses.get("dice_focal", ...)``, any of which can be overridden, e.g.
``--config.loss.options.dice_weight=...``. Outputs go to ``runs/dice_focal``.
"""

from configs import default


def get_config():
  """configs/default.py with the dice_focal loss."""
  config = default.get_config()
  config.loss.name = "dice_focal"
  config.loss.options.dice_weight = 1.0
  config.loss.options.focal_weight = 1.0
  config.loss.options.gamma = 2.0
  return config
