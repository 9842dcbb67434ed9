r"""dice_hausdorff: Dice + Hausdorff distance-transform loss (Karimi & Salcudean).

Run it with::

  python launch.py --config=configs/dice_hausdorff.py

The default experiment (``configs/default.py``) with the loss ``dice_hausdorff``; its options are
those of ``seg_jax.losses.get("dice_hausdorff", ...)``, any of which can be overridden, e.g.
``--config.loss.options.hausdorff_weight=0.05``. Outputs go to ``runs/dice_hausdorff``.
"""

from configs import default


def get_config():
  """configs/default.py with the dice_hausdorff loss."""
  config = default.get_config()
  config.loss.name = "dice_hausdorff"
  config.loss.options.dice_weight = 1.0
  config.loss.options.hausdorff_weight = 0.01
  return config
