r"""tversky: Tversky loss (Salehi et al. 2017): alpha weighs false positives, beta false
negatives.

Run it with::

  python launch.py --config=configs/tversky.py

The default experiment (``configs/default.py``) with the loss ``tversky``; its options are those of
``seg_jax.losses.get("tversky", ...)``, any of which can be overridden, e.g.
``--config.loss.options.alpha=...``. Outputs go to ``runs/tversky``.
"""

from configs import default


def get_config():
  """configs/default.py with the tversky loss."""
  config = default.get_config()
  config.loss.name = "tversky"
  config.loss.options.alpha = 0.5
  config.loss.options.beta = 0.5
  config.loss.options.smooth = 1e-5
  return config
