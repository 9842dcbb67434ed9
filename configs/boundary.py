r"""boundary: Boundary loss (Kervadec et al. 2019): probabilities weighted by the signed
distance to the true boundary.

Run it with::

  python launch.py --config=configs/boundary.py

The default experiment (``configs/default.py``) with the loss ``boundary``; its options are those of
``seg_jax.losses.get("boundary", ...)``, any of which can be overridden, e.g.
``--config.loss.options.include_background=...``. Outputs go to ``runs/boundary``.
"""

from configs import default


def get_config():
  """configs/default.py with the boundary loss."""
  config = default.get_config()
  config.loss.name = "boundary"
  config.loss.options.include_background = False
  return config
