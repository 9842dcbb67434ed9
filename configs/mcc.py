r"""mcc: Matthews correlation coefficient loss, 1 - soft MCC per class (Abhishek & Hamarneh 2021).

Run it with::

  python launch.py --config=configs/mcc.py

The default experiment (``configs/default.py``) with the loss ``mcc``; its options are those of
``seg_jax.losses.get("mcc", ...)``, any of which can be overridden, e.g.
``--config.loss.options.per_image=...``. Outputs go to ``runs/mcc``.
"""

from configs import default


def get_config():
  """configs/default.py with the mcc loss."""
  config = default.get_config()
  config.loss.name = "mcc"
  config.loss.options.include_background = True
  config.loss.options.per_image = False
  # added to each of TP, FP, FN, TN (segmentation_models_pytorch's eps)
  config.loss.options.smooth = 1e-5
  return config
