r"""dice: Soft Dice loss (Milletari et al. 2016) over the global batch.

Run it with::

  python launch.py --config=configs/dice.py

The default experiment (``configs/default.py``) with the loss ``dice``; its options are those of
``seg_jax.losses.get("dice", ...)``, any of which can be overridden, e.g.
``--config.loss.options.include_background=...``. Outputs go to ``runs/dice``.
"""

from configs import default


def get_config():
  """configs/default.py with the dice loss."""
  config = default.get_config()
  config.loss.name = "dice"
  config.loss.options.include_background = True
  # pooled over the batch (False) or averaged per image
  config.loss.options.per_image = False
  config.loss.options.smooth = 1e-5
  # V-Net squared denominator
  config.loss.options.squared = False
  return config
