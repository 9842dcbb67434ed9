r"""binary_cross_entropy: Binary cross-entropy (sigmoid) on the one-channel output.

Run it with::

  python launch.py --config=configs/binary_cross_entropy.py

The default experiment (``configs/default.py``) with the loss ``binary_cross_entropy``; its options
are those of ``seg_jax.losses.get("binary_cross_entropy", ...)``, any of which can be overridden,
e.g. ``--config.loss.options.pos_weight=...``. Outputs go to ``runs/binary_cross_entropy``.
"""

from ml_collections import config_dict

from configs import default


def get_config():
  """configs/default.py with the binary_cross_entropy loss."""
  config = default.get_config()
  config.loss.name = "binary_cross_entropy"
  # weight of positive pixels (None: 1)
  config.loss.options.pos_weight = config_dict.placeholder(float)
  config.loss.options.label_smoothing = 0.0
  return config
