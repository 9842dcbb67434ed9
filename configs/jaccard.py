r"""jaccard: Soft Jaccard (IoU) loss.

Run it with::

  python launch.py --config=configs/jaccard.py

The default experiment (``configs/default.py``) with the loss ``jaccard``; its options are those of
``seg_jax.losses.get("jaccard", ...)``, any of which can be overridden, e.g.
``--config.loss.options.include_background=...``. Outputs go to ``runs/jaccard``.
"""

from configs import default


def get_config():
  """configs/default.py with the jaccard loss."""
  config = default.get_config()
  config.loss.name = "jaccard"
  config.loss.options.include_background = True
  config.loss.options.per_image = False
  config.loss.options.smooth = 1e-5
  return config
