r"""Segmentation data sets of the tfds catalogue, by name, with the label mapping each needs.

A catalogue set is downloaded and prepared by tfds in ArrayRecord format into the data
directory on first use (this needs a network), then read with random access
(``builder.as_data_source``), like the built-in sets.

Entries:

* ``oxford_iiit_pet`` (Parkhi et al. 2012, "Cats and Dogs", CVPR): RGB photos of varying size
  with a trimap ``segmentation_mask`` whose values are 1 = pet, 2 = background, 3 = border
  (the uncertain band around the pet's outline). Mapped to the binary classes
  ``('background', 'pet')``: 2 -> 0, 1 -> 1, and the border by the ``border`` option:
  ``'ignore'`` (default: :data:`IGNORE_INDEX`, so losses and metrics skip those pixels, the
  convention of the trimap's authors, who leave the band unlabelled), ``'foreground'`` (-> 1) or
  ``'background'`` (-> 0). Any other mask value is an error naming the example's file. Splits:
  ``train`` = tfds ``train[:90%]``, ``validation`` = ``train[90%:]``, ``test`` = ``test``
  (tfds has no validation split for this set).

Example (needs a network the first time)::

  from seg_jax.data import catalogue
  ds = catalogue.load('oxford_iiit_pet', data_dir=None, image_size=128)
  ds.example('validation', 0)['label'].shape   # (128, 128)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow_datasets as tfds

from seg_jax.data import _build
from seg_jax.data.dataset import Augment, SegDataset

IGNORE_INDEX = 255
BORDER_CHOICES = ("ignore", "foreground", "background")


@dataclasses.dataclass(frozen=True)
class Entry:
  """How to read one catalogue data set.

  Attributes:
    tfds_name: tfds name (with config if any), e.g. ``'oxford_iiit_pet'``.
    image_key, mask_key: feature names of the image and the class map.
    class_names: our class names (class 0 first).
    splits: our split name -> tfds split string.
    label_map: ``label_map(border)`` -> {raw mask value: class} (see :func:`pet_label_map`).
    description: one line for listings.
  """

  tfds_name: str
  image_key: str
  mask_key: str
  class_names: tuple[str, ...]
  splits: Mapping[str, str]
  label_map: Callable[[str], Mapping[int, int]]
  description: str


def pet_label_map(border: str = "ignore") -> dict[int, int]:
  """oxford_iiit_pet trimap value -> class (1 pet -> 1, 2 background -> 0, 3 border -> ?)."""
  if border not in BORDER_CHOICES:
    raise ValueError(f"oxford_iiit_pet: border must be one of {BORDER_CHOICES}, got {border!r}.")
  return {1: 1, 2: 0, 3: {"ignore": IGNORE_INDEX, "foreground": 1, "background": 0}[border]}


CATALOGUE: dict[str, Entry] = {
  "oxford_iiit_pet": Entry(
    tfds_name="oxford_iiit_pet",
    image_key="image",
    mask_key="segmentation_mask",
    class_names=("background", "pet"),
    splits={"train": "train[:90%]", "validation": "train[90%:]", "test": "test"},
    label_map=pet_label_map,
    description="Oxford-IIIT Pet trimaps -> background/pet (border ignored by default).",
  ),
}


def names() -> tuple[str, ...]:
  """Names of the catalogue data sets."""
  return tuple(CATALOGUE)


class _MapDecoder:
  """Decodes a record: image as is, mask values through a lookup table (picklable)."""

  def __init__(self, entry: Entry, label_map: Mapping[int, int]):
    self.entry = entry
    self.label_map = dict(label_map)
    self.lut = np.full(256, -1, np.int32)
    for raw, cls in self.label_map.items():
      self.lut[raw] = cls

  def __call__(self, record):
    image = np.asarray(record[self.entry.image_key])
    mask = np.asarray(record[self.entry.mask_key])
    ident = record.get("file_name", "")
    ident = ident.decode() if isinstance(ident, bytes) else str(ident)
    if mask.ndim == 3 and mask.shape[-1] == 1:
      mask = mask[..., 0]
    if mask.dtype != np.uint8:
      raise ValueError(
        f"{self.entry.tfds_name} ({ident}): {self.entry.mask_key} must be uint8, got {mask.dtype}."
      )
    labels = self.lut[mask]
    if (labels < 0).any():
      bad = np.unique(mask[labels < 0])
      raise ValueError(
        f"{self.entry.tfds_name} ({ident or 'no file name'}): {self.entry.mask_key} holds "
        f"value(s) {bad[:10].tolist()} outside the known values {sorted(self.label_map)}."
      )
    return image, labels, ident or "no file name"


def load(
  name: str,
  *,
  data_dir: str | None,
  image_size: int,
  border: str = "ignore",
  augment: Augment | None = None,
  num_threads: int = 2,
  prefetch: int = 2,
  num_workers: int = 0,
) -> SegDataset:
  """Returns the :class:`SegDataset` of catalogue set ``name`` (downloads on first use).

  Args:
    name: one of :func:`names`.
    data_dir: tfds data directory (``None``: tfds's default).
    image_size: side of the square examples (records of other sizes are resized).
    border: oxford_iiit_pet's border pixels: ``'ignore'``, ``'foreground'`` or ``'background'``.
    augment, num_threads, prefetch, num_workers: see :class:`SegDataset`.

  Raises:
    ValueError: unknown name or option.
    RuntimeError: the download or preparation failed (e.g. no network); the message says where.
  """
  if name not in CATALOGUE:
    raise ValueError(f"catalogue: unknown data set {name!r}; catalogue names are {names()}.")
  entry = CATALOGUE[name]
  label_map = entry.label_map(border)
  try:
    builder = _build.prepared_builder(
      lambda: tfds.builder(entry.tfds_name, data_dir=data_dir, file_format="array_record")
    )
    sources = {ours: builder.as_data_source(split=theirs) for ours, theirs in entry.splits.items()}
  except ModuleNotFoundError as err:
    raise RuntimeError(
      f"catalogue: preparing {entry.tfds_name!r} needs the module {err.name!r} "
      f"(pip install {err.name})."
    ) from err
  except (OSError, ConnectionError) as err:
    raise RuntimeError(
      f"catalogue: could not download/prepare {entry.tfds_name!r} into data_dir={data_dir!r} "
      f"(a network is needed the first time): {err}"
    ) from err
  ignore = IGNORE_INDEX if IGNORE_INDEX in label_map.values() else None
  return SegDataset(
    name=name,
    num_classes=len(entry.class_names),
    class_names=entry.class_names,
    in_channels=3,
    spatial_shape=(int(image_size), int(image_size)),
    ignore_index=ignore,
    sources=sources,
    decode=_MapDecoder(entry, label_map),
    augment=augment or Augment(),
    num_threads=num_threads,
    prefetch=prefetch,
    num_workers=num_workers,
  )
