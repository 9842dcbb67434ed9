r"""dice_boundary: Dice + boundary loss (Kervadec et al.).

Run it with::

  python launch.py --config=configs/dice_boundary.py

The default experiment (``configs/default.py``) with the loss ``dice_boundary``; its options are
those of ``seg_jax.losses.get("dice_boundary", ...)``, any of which can be overridden, e.g.
``--config.loss.options.boundary_weight=0.05``. Outputs go to ``runs/dice_boundary``.
"""

from configs import default


def get_config():
  """configs/default.py with the dice_boundary loss."""
  config = default.get_config()
  config.loss.name = "dice_boundary"
  config.loss.options.dice_weight = 1.0
  config.loss.options.boundary_weight = 0.01
  return config
