r"""focal: Focal loss (Lin et al. 2017): cross-entropy down-weighting well-classified pixels.

Run it with::

  python launch.py --config=configs/focal.py

The default experiment (``configs/default.py``) with the loss ``focal``; its options are those of
``seg_jax.losses.get("focal", ...)``, any of which can be overridden, e.g.
``--config.loss.options.gamma=...``. Outputs go to ``runs/focal``.
"""

from ml_collections import config_dict

from configs import default


def get_config():
  """configs/default.py with the focal loss."""
  config = default.get_config()
  config.loss.name = "focal"
  # focusing parameter
  config.loss.options.gamma = 2.0
  # weight of the positive class (None: no weighting)
  config.loss.options.alpha = config_dict.placeholder(float)
  return config
