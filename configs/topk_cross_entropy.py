r"""topk_cross_entropy: mean cross-entropy of the hardest k percent of the pixels (nnU-Net TopK).

Run it with::

  python launch.py --config=configs/topk_cross_entropy.py

The default experiment (``configs/default.py``) with the loss ``topk_cross_entropy``; its options
are those of ``seg_jax.losses.get("topk_cross_entropy", ...)``, any of which can be overridden,
e.g. ``--config.loss.options.k=...``. Outputs go to ``runs/topk_cross_entropy``.
"""

from configs import default


def get_config():
  """configs/default.py with the topk_cross_entropy loss."""
  config = default.get_config()
  config.loss.name = "topk_cross_entropy"
  # percentage of the pixels (the hardest ones) averaged; nnU-Net's TopK10
  config.loss.options.k = 10.0
  return config
