r"""hausdorff_dt: Distance-transform Hausdorff loss (Karimi & Salcudean 2019).

Run it with::

  python launch.py --config=configs/hausdorff_dt.py

The default experiment (``configs/default.py``) with the loss ``hausdorff_dt``; its options are
those of ``seg_jax.losses.get("hausdorff_dt", ...)``, any of which can be overridden, e.g.
``--config.loss.options.alpha=...``. Outputs go to ``runs/hausdorff_dt``.
"""

from configs import default


def get_config():
  """configs/default.py with the hausdorff_dt loss."""
  config = default.get_config()
  config.loss.name = "hausdorff_dt"
  # power of the distances
  config.loss.options.alpha = 2.0
  return config
