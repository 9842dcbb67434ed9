r"""dice_ce: Dice + cross-entropy, the nnU-Net default.

Run it with::

  python launch.py --config=configs/dice_ce.py

The default experiment (``configs/default.py``) with the loss ``dice_ce``; its options are those of
``seg_jax.losses.get("dice_ce", ...)``, any of which can be overridden, e.g.
``--config.loss.options.dice_weight=...``. Outputs go to ``runs/dice_ce``.
"""

from configs import default


def get_config():
  """configs/default.py with the dice_ce loss."""
  config = default.get_config()
  config.loss.name = "dice_ce"
  config.loss.options.dice_weight = 1.0
  config.loss.options.ce_weight = 1.0
  return config
