r"""Which losses to try, from data-set statistics: the written-down rules of ``seg_jax.inspect``.

Each rule reads the statistics dict of :func:`seg_jax.choosing.inspect.label_statistics` and, when
its condition holds, names losses to try and/or loss options, with the reason and its sources. The
rules and their thresholds are the constants below; ``docs/choosing.md`` (section "Rules used by
seg_jax.inspect") states the same rules in prose. They are rules of thumb from the literature, to
be *tested* on the user's data with ``python -m seg_jax.compare``, not verdicts: Ma et al. (2021)
found no single loss best across tasks.

Definitions used (all on the pixels the pipeline yields, ignored pixels excluded; class 0 is the
background, every other class is foreground):

* pixel share of class :math:`c`: :math:`n_c / \sum_k n_k`, pixels counted over the inspected
  images;
* rarest foreground share :math:`r = \min_{c \ge 1} n_c / \sum_k n_k`;
* empty image: no foreground pixel; class absent from an image: no pixel of that class;
* thin share of a class: the share of its pixels in *thin* connected components (see
  :mod:`seg_jax.inspect`: width :math:`\le` ``THIN_MAX_WIDTH_PX`` and elongation
  :math:`\ge` ``THIN_MIN_ELONGATION``);
* boundary share of a class: the share of its pixels within ``BOUNDARY_BAND_PX`` pixels of the
  class boundary (Euclidean distance transform);
* median object size: median connected-component area over the inspected images, as a
  fraction of the image area.

Rules, in the order they are applied (``RULES``):

1. ``baseline`` (always): ``cross_entropy`` and ``dice_ce``, the references every other loss is
   compared with (nnU-Net's default is Dice + CE; Isensee et al. 2021).
2. ``imbalance``: :math:`r <` ``IMBALANCE_FRACTION`` -> overlap and compound losses ``dice``,
   ``dice_ce``, ``dice_topk`` (Dice + the cross-entropy of the hardest 10 % of pixels,
   DiceTopK10, among the most robust in Ma et al. 2021), ``focal_tversky``; with
   :math:`r <` ``SEVERE_IMBALANCE_FRACTION`` also ``dice_focal``; with two or more foreground
   classes also ``generalized_dice`` (Ma et al. 2021; Sudre et al. 2017; Milletari et al. 2016;
   Abraham & Khan 2019).
3. ``thin``: a foreground class with thin share :math:`\ge` ``THIN_MIN_SHARE`` -> ``cldice``
   (Shit et al. 2021) and ``dice_skeleton_recall`` (Kirchhoff et al. 2024). The latter, not bare
   ``skeleton_recall``: the paper adds Skeleton Recall to nnU-Net's Dice + CE (weights 1/1/1),
   and a recall term alone is minimised by predicting foreground everywhere.
4. ``boundary``: a foreground class that is not thin, with boundary share :math:`\ge`
   ``BOUNDARY_MIN_SHARE`` or median object size :math:`<` ``SMALL_OBJECT_FRACTION`` of the image
   -> ``dice_boundary`` and ``dice_hausdorff`` (Kervadec et al. 2019; Karimi & Salcudean 2020):
   the distance losses as compounds with Dice, as the papers use them.
5. ``empty``: empty images :math:`\ge` ``EMPTY_MIN_FRACTION`` of the images, or a foreground
   class absent from :math:`\ge` ``ABSENT_MIN_FRACTION`` of them -> no new loss; region losses
   (dice, tversky, focal_tversky, cldice, ...) should keep batch statistics
   (``per_image=False``, the seg_jax default) or, per image, set ``ignore_empty=True``
   (Kodym et al. 2018; Isensee et al. 2021).

Example::

  from seg_jax.choosing import recommend
  advice = recommend.recommend(stats)  # stats: seg_jax.choosing.inspect.label_statistics
  recommend.losses_to_try(advice)              # ['cross_entropy', 'dice_ce', 'dice', ...]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# ---------------------------------------------------------------------------------------------
# Thresholds. Heuristics, stated so that they can be argued with; see docs/choosing.md.

# Imbalance: the rarest foreground class covers less than this share of the (non-ignored)
# pixels. 10 % is where pixel-averaged cross-entropy starts to be dominated by the background
# and overlap losses are usually advised (the synthetic 'balanced' set has ~20 % foreground, the
# 'imbalanced' one ~2 %).
IMBALANCE_FRACTION = 0.10
# Severe imbalance (under 1 %: the "highly unbalanced" regime of Sudre et al. 2017 and Kervadec
# et al. 2019, lesions, small organs): add dice_focal, the other robust compound of Ma et al.
SEVERE_IMBALANCE_FRACTION = 0.01
# Thin structures: at least half of a class's pixels lie in thin components (inspect's
# definition: at most THIN_MAX_WIDTH_PX wide, at least THIN_MIN_ELONGATION times longer than
# wide). Overlap losses barely notice a broken 1-3 px vessel; clDice measures connectivity.
THIN_MIN_SHARE = 0.5
THIN_MAX_WIDTH_PX = 5.0
THIN_MIN_ELONGATION = 4.0
# Boundary quality: pixels within this many pixels of the class boundary count as "boundary".
BOUNDARY_BAND_PX = 2.0
# ... and when at least half of a class's pixels are boundary pixels, an error of one or two
# pixels along the contour costs most of the overlap, so distance-based losses are worth a try.
BOUNDARY_MIN_SHARE = 0.5
# Small objects: median connected component under 1 % of the image area.
SMALL_OBJECT_FRACTION = 0.01
# Empty images: at least 10 % of the images hold no foreground at all, or a foreground class is
# missing from at least half of them. Per-image Dice is undefined (0/0, settled only by the
# smoothing constant) on such images.
EMPTY_MIN_FRACTION = 0.10
ABSENT_MIN_FRACTION = 0.5

SOURCES = {
  "isensee2021": (
    "Isensee, Jaeger, Kohl, Petersen, Maier-Hein. nnU-Net: a self-configuring method for deep "
    "learning-based biomedical image segmentation. Nature Methods 18, 2021."
  ),
  "ma2021": (
    "Ma, Chen, Ng, Huang, Li, Li, Yang, Martel. Loss odyssey in medical image segmentation. "
    "Medical Image Analysis 71, 2021."
  ),
  "sudre2017": (
    "Sudre, Li, Vercauteren, Ourselin, Cardoso. Generalised Dice overlap as a deep learning loss "
    "function for highly unbalanced segmentations. DLMIA 2017."
  ),
  "milletari2016": (
    "Milletari, Navab, Ahmadi. V-Net: fully convolutional neural networks for volumetric medical "
    "image segmentation. 3DV 2016."
  ),
  "abraham2019": (
    "Abraham, Khan. A novel focal Tversky loss function with improved attention U-Net for lesion "
    "segmentation. ISBI 2019."
  ),
  "shit2021": (
    "Shit, Paetzold, Sekuboyina, et al. clDice - a novel topology-preserving loss function for "
    "tubular structure segmentation. CVPR 2021."
  ),
  "kirchhoff2024": (
    "Kirchhoff, Rokuss, Roy, Kovacs, Ulrich, Wald, Zenk, Vollmuth, Kleesiek, Isensee, "
    "Maier-Hein. Skeleton Recall Loss for connectivity conserving and resource efficient "
    "segmentation of thin tubular structures. ECCV 2024."
  ),
  "kervadec2019": (
    "Kervadec, Bouchtiba, Desrosiers, Granger, Dolz, Ben Ayed. Boundary loss for highly "
    "unbalanced segmentation. MIDL 2019 (Medical Image Analysis 67, 2021)."
  ),
  "karimi2020": (
    "Karimi, Salcudean. Reducing the Hausdorff distance in medical image segmentation with "
    "convolutional neural networks. IEEE TMI 39(2), 2020 (arXiv 1904.10030, 2019)."
  ),
  "kodym2018": (
    "Kodym, Spanel, Herout. Segmentation of head and neck organs at risk using CNN with batch "
    "dice loss. GCPR 2018."
  ),
}


@dataclasses.dataclass(frozen=True)
class Advice:
  """One fired rule: losses to try and/or options to set, and why.

  Attributes:
    rule: the rule's id (``'baseline'``, ``'imbalance'``, ``'thin'``, ``'boundary'``,
      ``'empty'``).
    losses: registry names to try (may be empty for option-only advice).
    reason: why, with the measured numbers and the threshold.
    options: alternative sets of loss options, each ``{option: value}``; any one of them
      follows the advice (may be empty).
    sources: keys of :data:`SOURCES`.
  """

  rule: str
  losses: tuple[str, ...]
  reason: str
  options: tuple[Mapping[str, Any], ...] = ()
  sources: tuple[str, ...] = ()

  def to_dict(self) -> dict[str, Any]:
    return {
      "rule": self.rule,
      "losses": list(self.losses),
      "reason": self.reason,
      "options": [dict(o) for o in self.options],
      "sources": [SOURCES[s] for s in self.sources],
    }


def _pct(x: float) -> str:
  return f"{100.0 * x:.3g} %"


def _foreground(stats: Mapping[str, Any]) -> list[Mapping[str, Any]]:
  return [c for c in stats["classes"] if c["index"] != 0]


def _rule_baseline(stats) -> Advice | None:
  fg = _foreground(stats)
  rarest = min((c["pixel_fraction"] for c in fg), default=0.0)
  balanced = rarest >= IMBALANCE_FRACTION
  why = (
    f"balanced data (rarest foreground class {_pct(rarest)} of the pixels, >= "
    f"{_pct(IMBALANCE_FRACTION)}): cross-entropy is the standard and Dice + CE the nnU-Net default"
    if balanced
    else "baselines: every other loss should beat cross-entropy and Dice + CE (nnU-Net's default)"
    " to be worth its cost"
  )
  return Advice("baseline", ("cross_entropy", "dice_ce"), why, sources=("isensee2021", "ma2021"))


def _rule_imbalance(stats) -> Advice | None:
  fg = _foreground(stats)
  if not fg:
    return None
  rarest = min(fg, key=lambda c: c["pixel_fraction"])
  r = rarest["pixel_fraction"]
  if r >= IMBALANCE_FRACTION:
    return None
  names = ["dice", "dice_ce", "dice_topk", "focal_tversky"]
  share = (
    f"covers {_pct(r)} of the pixels"
    if r > 0
    else "never appears in the inspected images (check the split and max_examples)"
  )
  why = (
    f"class imbalance: the rarest foreground class {rarest['name']!r} {share} "
    f"(< {_pct(IMBALANCE_FRACTION)}); overlap losses normalise by the class size, and "
    "compounds of Dice with a pixel loss (Dice + CE, Dice + TopK) were the most robust in Ma "
    "et al.'s benchmark"
  )
  if r < SEVERE_IMBALANCE_FRACTION:
    names.append("dice_focal")
    why += f"; under {_pct(SEVERE_IMBALANCE_FRACTION)} also Dice + focal"
  if len(fg) >= 2:
    names.append("generalized_dice")
    why += "; several foreground classes: generalised Dice weights each by 1/size^2"
  return Advice(
    "imbalance",
    tuple(names),
    why,
    sources=("ma2021", "sudre2017", "milletari2016", "abraham2019"),
  )


def _is_thin(c: Mapping[str, Any]) -> bool:
  return c["thin_fraction"] is not None and c["thin_fraction"] >= THIN_MIN_SHARE


def _rule_thin(stats) -> Advice | None:
  thin = [c for c in _foreground(stats) if _is_thin(c)]
  if not thin:
    return None
  parts = ", ".join(f"{c['name']!r} {_pct(c['thin_fraction'])}" for c in thin)
  why = (
    f"thin structures: share of pixels in thin components ({parts}) >= {_pct(THIN_MIN_SHARE)}; "
    "clDice rewards the skeleton's connectivity, which overlap losses barely see; Skeleton "
    "Recall (on top of Dice + CE, as in its paper) asks for the tubed skeleton of the truth to "
    "be covered, at a fraction of clDice's cost"
  )
  return Advice(
    "thin", ("cldice", "dice_skeleton_recall"), why, sources=("shit2021", "kirchhoff2024")
  )


def _rule_boundary(stats) -> Advice | None:
  hits = []
  for c in _foreground(stats):
    if _is_thin(c) or c["boundary_fraction"] is None:
      continue
    median = c["component_size_fraction"]["median"]
    if c["boundary_fraction"] >= BOUNDARY_MIN_SHARE:
      hits.append(
        f"{c['name']!r}: {_pct(c['boundary_fraction'])} of its pixels within "
        f"{BOUNDARY_BAND_PX:g} px of the boundary (>= {_pct(BOUNDARY_MIN_SHARE)})"
      )
    elif median is not None and median < SMALL_OBJECT_FRACTION:
      hits.append(
        f"{c['name']!r}: median object {_pct(median)} of the image "
        f"(< {_pct(SMALL_OBJECT_FRACTION)})"
      )
  if not hits:
    return None
  why = (
    "small or boundary-dominated objects (" + "; ".join(hits) + "): distance-weighted losses "
    "penalise errors by how far they are from the true contour; they are used as compounds "
    "with a region loss (the presets dice_boundary and dice_hausdorff: Dice plus 0.01 x the "
    "distance term), as the papers do"
  )
  return Advice(
    "boundary",
    ("dice_boundary", "dice_hausdorff"),
    why,
    sources=("kervadec2019", "karimi2020"),
  )


def _rule_empty(stats) -> Advice | None:
  hits = []
  if stats["empty_fraction"] >= EMPTY_MIN_FRACTION:
    hits.append(
      f"{_pct(stats['empty_fraction'])} of the images have no foreground "
      f"(>= {_pct(EMPTY_MIN_FRACTION)})"
    )
  fg = _foreground(stats)
  if len(fg) >= 2:  # With one foreground class, 'absent' is the same as 'empty'.
    for c in fg:
      if c["absent_fraction"] >= ABSENT_MIN_FRACTION:
        hits.append(
          f"{c['name']!r} is absent from {_pct(c['absent_fraction'])} of the images "
          f"(>= {_pct(ABSENT_MIN_FRACTION)})"
        )
  if not hits:
    return None
  why = (
    "empty images (" + "; ".join(hits) + "): per-image Dice-type losses are 0/0 on an image "
    "without the class, so keep batch statistics (per_image=False, the seg_jax default) or set "
    "ignore_empty=True when using per_image=True; the CE term of dice_ce still teaches 'nothing "
    "here'"
  )
  return Advice(
    "empty",
    (),
    why,
    options=({"per_image": False}, {"per_image": True, "ignore_empty": True}),
    sources=("kodym2018", "isensee2021"),
  )


@dataclasses.dataclass(frozen=True)
class Rule:
  """A named rule: ``check(stats)`` returns an :class:`Advice` when the rule fires."""

  name: str
  summary: str
  check: Callable[[Mapping[str, Any]], Advice | None]


RULES: tuple[Rule, ...] = (
  Rule("baseline", "always: cross_entropy, dice_ce", _rule_baseline),
  Rule(
    "imbalance",
    f"rarest foreground class < {IMBALANCE_FRACTION:g} of the pixels: dice, dice_ce, "
    f"dice_topk, focal_tversky (+ dice_focal under {SEVERE_IMBALANCE_FRACTION:g}; "
    "+ generalized_dice with several foreground classes)",
    _rule_imbalance,
  ),
  Rule("thin", f"thin share >= {THIN_MIN_SHARE:g}: cldice, dice_skeleton_recall", _rule_thin),
  Rule(
    "boundary",
    f"boundary share >= {BOUNDARY_MIN_SHARE:g} or median object < {SMALL_OBJECT_FRACTION:g} "
    "of the image: dice_boundary, dice_hausdorff",
    _rule_boundary,
  ),
  Rule(
    "empty",
    f"empty images >= {EMPTY_MIN_FRACTION:g} or a class absent from >= "
    f"{ABSENT_MIN_FRACTION:g} of the images: per_image=False or ignore_empty=True",
    _rule_empty,
  ),
)


def recommend(stats: Mapping[str, Any]) -> list[Advice]:
  """Applies :data:`RULES` to the statistics of :func:`seg_jax.choosing.inspect.label_statistics`.

  Args:
    stats: the statistics dict (keys ``classes``, ``empty_fraction``, ...).

  Returns:
    The fired rules' advice, in rule order (``baseline`` always first).
  """
  for key in ("classes", "empty_fraction"):
    if key not in stats:
      raise KeyError(
        f"recommend: stats has no {key!r}; pass the dict of "
        "seg_jax.choosing.inspect.label_statistics."
      )
  out = []
  for rule in RULES:
    advice = rule.check(stats)
    if advice is not None:
      out.append(advice)
  return out


def losses_to_try(advice: Sequence[Advice]) -> list[str]:
  """The advised loss names, in order of first mention, without repeats."""
  names: list[str] = []
  for a in advice:
    names.extend(n for n in a.losses if n not in names)
  return names
