r"""unified_focal: Unified focal loss (Yeung et al. 2022).

Run it with::

  python launch.py --config=configs/unified_focal.py

The default experiment (``configs/default.py``) with the loss ``unified_focal``; its options are
those of ``seg_jax.losses.get("unified_focal", ...)``, any of which can be overridden, e.g.
``--config.loss.options.weight=...``. Outputs go to ``runs/unified_focal``.
"""

from configs import default


def get_config():
  """configs/default.py with the unified_focal loss."""
  config = default.get_config()
  config.loss.name = "unified_focal"
  # lambda between the focal and focal Tversky terms
  config.loss.options.weight = 0.5
  config.loss.options.delta = 0.6
  config.loss.options.gamma = 0.5
  return config
