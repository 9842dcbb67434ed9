r"""dice_skeleton_recall: Dice + cross-entropy + Skeleton Recall (Kirchhoff et al. 2024).

Run it with::

  python launch.py --config=configs/dice_skeleton_recall.py

The default experiment (``configs/default.py``) with the loss ``dice_skeleton_recall``; its
options are those of ``seg_jax.losses.get("dice_skeleton_recall", ...)``, any of which can be
overridden, e.g. ``--config.loss.options.skeleton_recall_weight=...``. Weights 1, 1, 1 as the
authors' nnU-Net trainer; the data pipeline computes each example's tubed skeleton on the host
(``train.precompute_targets``). Outputs go to ``runs/dice_skeleton_recall``.
"""

from configs import default


def get_config():
  """configs/default.py with the dice_skeleton_recall loss."""
  config = default.get_config()
  config.loss.name = "dice_skeleton_recall"
  config.loss.options.dice_weight = 1.0
  config.loss.options.ce_weight = 1.0
  config.loss.options.skeleton_recall_weight = 1.0
  return config
