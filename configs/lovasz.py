r"""lovasz: Lovasz hinge / softmax loss (Berman et al. 2018), a convex surrogate of IoU.

Run it with::

  python launch.py --config=configs/lovasz.py

The default experiment (``configs/default.py``) with the loss ``lovasz``; its options are those of
``seg_jax.losses.get("lovasz", ...)``, any of which can be overridden, e.g.
``--config.loss.options.per_image=...``. Outputs go to ``runs/lovasz``.
"""

from configs import default


def get_config():
  """configs/default.py with the lovasz loss."""
  config = default.get_config()
  config.loss.name = "lovasz"
  config.loss.options.per_image = False
  return config
