r"""dice_topk: Dice + top-k cross-entropy, nnU-Net's DC_and_topk_loss (DiceTopK10).

Run it with::

  python launch.py --config=configs/dice_topk.py

The default experiment (``configs/default.py``) with the loss ``dice_topk``; its options are those
of ``seg_jax.losses.get("dice_topk", ...)``, any of which can be overridden, e.g.
``--config.loss.options.k=...``. Outputs go to ``runs/dice_topk``.
"""

from configs import default


def get_config():
  """configs/default.py with the dice_topk loss."""
  config = default.get_config()
  config.loss.name = "dice_topk"
  config.loss.options.dice_weight = 1.0
  config.loss.options.topk_weight = 1.0
  # percentage of the pixels (the hardest ones) in the top-k term
  config.loss.options.k = 10.0
  return config
