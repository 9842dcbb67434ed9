r"""skeleton_recall: Skeleton Recall (Kirchhoff et al. 2024): soft recall on the tubed skeleton.

Run it with::

  python launch.py --config=configs/skeleton_recall.py

The default experiment (``configs/default.py``) with the loss ``skeleton_recall``; its options are
those of ``seg_jax.losses.get("skeleton_recall", ...)``, any of which can be overridden, e.g.
``--config.loss.options.smooth=...``. The data pipeline computes each example's tubed skeleton on
the host (``train.precompute_targets``). Outputs go to ``runs/skeleton_recall``. The paper trains
with the compound ``configs/dice_skeleton_recall.py``; this is the term on its own.
"""

from configs import default


def get_config():
  """configs/default.py with the skeleton_recall loss."""
  config = default.get_config()
  config.loss.name = "skeleton_recall"
  # smoothing constant of the recall (nnU-Net's trainer)
  config.loss.options.smooth = 1e-5
  # in-jit skeleton only (when train.precompute_targets is False): iterations and tube width
  config.loss.options.num_iter = 5
  config.loss.options.tube = 2
  return config
