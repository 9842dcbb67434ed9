r"""cross_entropy: Cross-entropy: sigmoid BCE on binary data (one output channel), softmax
cross-entropy on multiclass data.

Run it with::

  python launch.py --config=configs/cross_entropy.py

The default experiment (``configs/default.py``) with the loss ``cross_entropy``; its options are
those of ``seg_jax.losses.get("cross_entropy", ...)``, any of which can be overridden, e.g.
``--config.loss.options.class_weights=...``. Outputs go to ``runs/cross_entropy``.
"""

from ml_collections import config_dict

from configs import default


def get_config():
  """configs/default.py with the cross_entropy loss."""
  config = default.get_config()
  config.loss.name = "cross_entropy"
  # one weight per output channel (None: equal)
  config.loss.options.class_weights = config_dict.placeholder(tuple)
  config.loss.options.label_smoothing = 0.0
  return config
