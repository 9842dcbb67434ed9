r"""Segmentation losses for JAX.

Every loss is a pure function ``name(logits, labels, *, options) -> jax.Array`` on channels-last
inputs ``(batch, *spatial, channels)`` with 1-3 spatial dims; see :mod:`seg_jax.losses._common`
for the shared conventions (modes, labels, masks, ``ignore_index``, reductions, ``axis_name``).
Configs pick a loss by registry name: ``get(name, **options)`` binds options, ``names()`` lists
them. ``checked(loss_fn)`` is the same loss raising on bad input values (labels out of range,
non-finite logits, negative mask weights), from inside ``jit`` too.

This package imports only jax, numpy and chex.
"""

from seg_jax.losses.boundary import boundary_loss, hausdorff_dt_loss
from seg_jax.losses.boundary_dou import boundary_dou_loss
from seg_jax.losses.checks import checked, checkified
from seg_jax.losses.cldice import cldice_loss, soft_skeleton
from seg_jax.losses.compound import (
  combine,
  deep_supervision,
  dice_boundary_loss,
  dice_ce_loss,
  dice_focal_loss,
  dice_hausdorff_loss,
  dice_skeleton_recall_loss,
  dice_topk_loss,
)
from seg_jax.losses.cross_entropy import binary_cross_entropy, cross_entropy
from seg_jax.losses.dice import dice_loss, log_cosh_dice_loss
from seg_jax.losses.distance import (
  boundary_distance_map,
  distance_transform_edt,
  signed_distance_map,
)
from seg_jax.losses.focal import focal_loss
from seg_jax.losses.generalized_dice import generalized_dice_loss
from seg_jax.losses.jaccard import jaccard_loss
from seg_jax.losses.labels import check_labels
from seg_jax.losses.lovasz import lovasz_loss
from seg_jax.losses.mcc import mcc_loss
from seg_jax.losses.registry import get, lookup, names, options, register, targets
from seg_jax.losses.skeleton_recall import skeleton_recall_loss
from seg_jax.losses.topk import topk_cross_entropy
from seg_jax.losses.tversky import focal_tversky_loss, tversky_loss
from seg_jax.losses.unified_focal import unified_focal_loss

__all__ = [
  "binary_cross_entropy",
  "boundary_distance_map",
  "boundary_dou_loss",
  "boundary_loss",
  "check_labels",
  "checked",
  "checkified",
  "cldice_loss",
  "combine",
  "cross_entropy",
  "deep_supervision",
  "dice_boundary_loss",
  "dice_ce_loss",
  "dice_focal_loss",
  "dice_hausdorff_loss",
  "dice_loss",
  "dice_skeleton_recall_loss",
  "dice_topk_loss",
  "distance_transform_edt",
  "focal_loss",
  "focal_tversky_loss",
  "generalized_dice_loss",
  "get",
  "hausdorff_dt_loss",
  "jaccard_loss",
  "log_cosh_dice_loss",
  "lookup",
  "lovasz_loss",
  "mcc_loss",
  "names",
  "options",
  "register",
  "signed_distance_map",
  "skeleton_recall_loss",
  "soft_skeleton",
  "targets",
  "topk_cross_entropy",
  "tversky_loss",
  "unified_focal_loss",
]
