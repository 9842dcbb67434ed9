r"""cldice: Soft clDice (Shit et al. 2021): Dice combined with a skeleton-overlap term.

Run it with::

  python launch.py --config=configs/cldice.py

The default experiment (``configs/default.py``) with the loss ``cldice``; its options are those of
``seg_jax.losses.get("cldice", ...)``, any of which can be overridden, e.g.
``--config.loss.options.alpha=...``. Outputs go to ``runs/cldice``.
"""

from configs import default


def get_config():
  """configs/default.py with the cldice loss."""
  config = default.get_config()
  config.loss.name = "cldice"
  # weight of the clDice term
  config.loss.options.alpha = 0.5
  # soft-skeleton iterations
  config.loss.options.num_iter = 3
  return config
