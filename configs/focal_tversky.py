r"""focal_tversky: Focal Tversky loss (Abraham & Khan 2019).

Run it with::

  python launch.py --config=configs/focal_tversky.py

The default experiment (``configs/default.py``) with the loss ``focal_tversky``; its options are
those of ``seg_jax.losses.get("focal_tversky", ...)``, any of which can be overridden, e.g.
``--config.loss.options.alpha=...``. Outputs go to ``runs/focal_tversky``.
"""

from configs import default


def get_config():
  """configs/default.py with the focal_tversky loss."""
  config = default.get_config()
  config.loss.name = "focal_tversky"
  config.loss.options.alpha = 0.3
  config.loss.options.beta = 0.7
  config.loss.options.gamma = 0.75
  return config
