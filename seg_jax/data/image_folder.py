r"""``image_folder``: the user's own images and masks, as a tfds data set (ArrayRecord).

Layouts (``path`` is the root; images and masks are paired by file stem, ``a.jpg`` with
``a.png``; suffixes ``.png .jpg .jpeg .tif .tiff .npy``, case-insensitive):

1. ``path/images/`` + ``path/masks/``: split into ``train`` and ``validation`` by
   ``validation_fraction`` (the stems are sorted, permuted with ``split_seed``, and the first
   ``round(n * validation_fraction)``, at least 1, go to validation).
2. ``path/train/{images,masks}/`` + ``path/validation/{images,masks}/`` (and optionally
   ``path/test/{images,masks}/``): the subfolders are the splits (``validation_fraction`` unused).

Images: 8-bit or 16-bit PNG/TIFF, JPEG (grey, RGB; alpha is dropped, palettes are expanded to
RGB; only the first page of a multi-page TIFF), or ``.npy`` arrays ``(h, w)`` or ``(h, w, c)``
(channels last) of any numeric dtype. The pipeline scales uint8 by 1/255, uint16 by 1/65535 and
leaves other dtypes as they are. ``channels`` (0 = as stored) converts 1-channel images to
``channels`` by repetition; any other mismatch is an error.

Masks: single-channel integer class maps (PNG/TIFF incl. palette PNGs, whose indices are the
classes, or ``.npy`` integer/bool arrays; float arrays only if every value is a whole number; an
RGB mask is accepted only if its three channels are equal). By default a mask value *is* the
class; ``mask_values=(0, 255)`` maps the i-th listed value to class i (e.g. 0/255 binary masks).
``ignore_index`` may also appear (pixels to ignore).

Every file is read and checked once, when the data set is built (cached in
``data_dir/seg_image_folder/<key>``, where the key hashes the root path, the options and every
file's name, size and modification time, so edits trigger a rebuild). Errors name the file:
an unreadable file, an image without a mask (or a mask without an image), two files with the
same stem, a mask whose size differs from its image, label values outside the declared classes,
images with different channel counts.

Records hold the original file bytes (``image``, ``mask``), their suffixes and ``file_name``;
they are decoded when read.

Example::

  from seg_jax.data import image_folder
  ds = image_folder.load(image_folder.Options(path='my_data', num_classes=2,
                                              mask_values=(0, 255)),
                         data_dir='/tmp/tfds', image_size=128)
  ds.example('train', 0)['image'].shape   # (128, 128, 3)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError
from tensorflow_datasets.core import utils as tfds_utils

from seg_jax.data import _build
from seg_jax.data.dataset import Augment, SegDataset

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy")
SPLIT_DIRS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Options:
  """What the folder holds and how to split it (see the module docstring).

  Attributes:
    path: root folder.
    num_classes: number of classes, background (0) included; mask values must lie in
      ``[0, num_classes)`` (after ``mask_values``) or equal ``ignore_index``.
    class_names: one name per class; empty: ``('background', 'class_1', ...)``.
    mask_values: raw mask values in class order (value i -> class i); empty: values are classes.
    ignore_index: an extra allowed mask value marking ignored pixels (``None``: none).
    channels: image channels (0: as stored, which must agree over all images).
    validation_fraction: share of the flat layout's examples held out for validation, in (0, 1).
    split_seed: seed of the flat layout's train/validation assignment.
  """

  path: str
  num_classes: int = 2
  class_names: tuple[str, ...] = ()
  mask_values: tuple[int, ...] = ()
  ignore_index: int | None = None
  channels: int = 0
  validation_fraction: float = 0.2
  split_seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, "class_names", tuple(self.class_names))
    object.__setattr__(self, "mask_values", tuple(int(v) for v in self.mask_values))
    if self.num_classes < 2:
      raise ValueError(f"image_folder: num_classes must be >= 2, got {self.num_classes}.")
    if self.class_names and len(self.class_names) != self.num_classes:
      raise ValueError(
        f"image_folder: {len(self.class_names)} class_names {self.class_names} for "
        f"num_classes={self.num_classes}."
      )
    if self.mask_values and len(self.mask_values) != self.num_classes:
      raise ValueError(
        f"image_folder: mask_values {self.mask_values} must list one raw value per class "
        f"(num_classes={self.num_classes})."
      )
    if len(set(self.mask_values)) != len(self.mask_values):
      raise ValueError(f"image_folder: mask_values {self.mask_values} has repeated values.")
    if self.channels < 0:
      raise ValueError(f"image_folder: channels must be >= 0, got {self.channels}.")
    if not 0.0 < self.validation_fraction < 1.0:
      raise ValueError(
        f"image_folder: validation_fraction must lie in (0, 1), got {self.validation_fraction}."
      )

  @property
  def names(self) -> tuple[str, ...]:
    if self.class_names:
      return self.class_names
    return ("background",) + tuple(f"class_{i}" for i in range(1, self.num_classes))


# ----------------------------------------------------------------------------------------------
# Files: listing, pairing, splitting.


def _list(folder: str) -> dict[str, str]:
  """stem -> path of the supported files in ``folder``; duplicate stems are an error."""
  found: dict[str, str] = {}
  for entry in sorted(os.listdir(folder)):
    path = os.path.join(folder, entry)
    stem, suffix = os.path.splitext(entry)
    if entry.startswith(".") or not os.path.isfile(path) or suffix.lower() not in SUFFIXES:
      continue
    if stem in found:
      raise ValueError(
        f"image_folder: two files with the stem {stem!r} in {folder}: {found[stem]} and {path}; "
        "images and masks are paired by stem, so stems must be unique."
      )
    found[stem] = path
  return found


def _pairs(root: str) -> list[tuple[str, str, str]]:
  """Sorted ``(stem, image_path, mask_path)`` of ``root/images`` + ``root/masks``."""
  image_dir, mask_dir = os.path.join(root, "images"), os.path.join(root, "masks")
  for folder in (image_dir, mask_dir):
    if not os.path.isdir(folder):
      raise ValueError(f"image_folder: missing folder {folder} (expected images/ and masks/).")
  images, masks = _list(image_dir), _list(mask_dir)
  if not images:
    raise ValueError(f"image_folder: no image files ({', '.join(SUFFIXES)}) in {image_dir}.")
  for stem, path in images.items():
    if stem not in masks:
      raise ValueError(
        f"image_folder: image {path} has no mask: expected {os.path.join(mask_dir, stem)}.<"
        f"{'|'.join(s[1:] for s in SUFFIXES)}>."
      )
  for stem, path in masks.items():
    if stem not in images:
      raise ValueError(f"image_folder: mask {path} has no image with the stem {stem!r}.")
  return [(stem, images[stem], masks[stem]) for stem in sorted(images)]


def split_files(options: Options) -> dict[str, list[tuple[str, str, str]]]:
  """Split name -> sorted ``(stem, image_path, mask_path)`` (see the module docstring)."""
  if not options.path:
    raise ValueError(
      "image_folder: path is empty; set it (config.data.folder.path) to the folder holding "
      "images/ and masks/."
    )
  root = os.path.abspath(os.path.expanduser(options.path))
  if not os.path.isdir(root):
    raise ValueError(f"image_folder: path {options.path!r} is not a folder.")
  if os.path.isdir(os.path.join(root, "images")):
    pairs = _pairs(root)
    if len(pairs) < 2:
      raise ValueError(
        f"image_folder: {root} holds {len(pairs)} image; at least 2 are needed to split off a "
        "validation set."
      )
    order = np.random.default_rng(options.split_seed).permutation(len(pairs))
    n_val = min(max(round(len(pairs) * options.validation_fraction), 1), len(pairs) - 1)
    val = set(order[:n_val].tolist())
    return {
      "train": [p for i, p in enumerate(pairs) if i not in val],
      "validation": [p for i, p in enumerate(pairs) if i in val],
    }
  present = [s for s in SPLIT_DIRS if os.path.isdir(os.path.join(root, s))]
  if "train" not in present or "validation" not in present:
    raise ValueError(
      f"image_folder: {root} must hold images/ and masks/, or train/ and validation/ "
      f"subfolders (each with images/ and masks/); found {sorted(os.listdir(root))}."
    )
  return {s: _pairs(os.path.join(root, s)) for s in present}


# ----------------------------------------------------------------------------------------------
# Decoding one file.


def read_array(data: bytes, suffix: str, name: str) -> np.ndarray:
  """Decodes file bytes to an array (PIL for images, ``np.load`` for .npy; no pickles).

  Images come back as ``(h, w)`` or ``(h, w, c)`` in their stored dtype: palette images as
  RGB, alpha dropped, bilevel as uint8 0/255.

  Raises:
    ValueError: the file cannot be decoded; the message names it.
  """
  try:
    if suffix.lower() == ".npy":
      return np.load(io.BytesIO(data), allow_pickle=False)
    with Image.open(io.BytesIO(data)) as img:
      img.seek(0)
      mode = img.mode
      if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
      elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("L" if mode == "1" else "RGB")
      array = np.asarray(img)
  except (OSError, UnidentifiedImageError, ValueError, EOFError) as err:
    raise ValueError(f"image_folder: cannot read {name}: {err}") from None
  if array.ndim == 3 and array.shape[-1] in (2, 4) and mode in ("LA", "RGBA", "PA", "P"):
    array = array[..., :-1]  # Drop alpha.
  return array


def read_mask(data: bytes, suffix: str, name: str) -> np.ndarray:
  """Decodes a mask file to an integer ``(h, w)`` array of raw values (palette indices kept)."""
  if suffix.lower() != ".npy":
    try:
      with Image.open(io.BytesIO(data)) as img:
        img.seek(0)
        array = np.asarray(img.convert("L") if img.mode == "1" else img)
    except (OSError, UnidentifiedImageError, ValueError, EOFError) as err:
      raise ValueError(f"image_folder: cannot read mask {name}: {err}") from None
    if img.mode == "1":
      array = (array > 0).astype(np.uint8)
  else:
    array = read_array(data, suffix, name)
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  if array.ndim == 3 and array.shape[-1] in (3, 4):
    rgb = array[..., :3]
    if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()):
      raise ValueError(
        f"image_folder: mask {name} is a colour image (channels differ); save masks as "
        "single-channel class maps (grey or palette PNG, or integer .npy)."
      )
    array = rgb[..., 0]
  if array.ndim != 2:
    raise ValueError(f"image_folder: mask {name} must be (height, width), got {array.shape}.")
  if array.dtype == np.bool_:
    array = array.astype(np.uint8)
  if np.issubdtype(array.dtype, np.floating):
    if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
      raise ValueError(
        f"image_folder: mask {name} holds non-integer values (dtype {array.dtype}); masks are "
        "class maps."
      )
    array = array.astype(np.int64)
  if not np.issubdtype(array.dtype, np.integer):
    raise ValueError(f"image_folder: mask {name} has dtype {array.dtype}; masks need integers.")
  return array


def map_mask(raw: np.ndarray, options: Options, name: str) -> np.ndarray:
  """Raw mask values -> int32 classes, checked against the declared classes (names the file)."""
  values = np.unique(raw)
  allowed = set(options.mask_values) if options.mask_values else set(range(options.num_classes))
  if options.ignore_index is not None:
    allowed.add(options.ignore_index)
  bad = [int(v) for v in values if int(v) not in allowed]
  if bad:
    hint = ""
    if not options.mask_values and options.num_classes == 2 and set(bad) <= {255}:
      hint = " For 0/255 masks set mask_values=(0, 255)."
    shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
    declared = (
      f"mask_values={options.mask_values}"
      if options.mask_values
      else f"classes 0..{options.num_classes - 1} (num_classes={options.num_classes})"
    )
    ignore = f" or ignore_index={options.ignore_index}" if options.ignore_index is not None else ""
    raise ValueError(
      f"image_folder: mask {name} holds value(s) {shown} outside the declared {declared}"
      f"{ignore}.{hint}"
    )
  out = raw.astype(np.int32)
  if options.mask_values:
    lut = {v: i for i, v in enumerate(options.mask_values)}
    out = np.full(raw.shape, -1 if options.ignore_index is None else options.ignore_index, np.int32)
    for v, i in lut.items():
      out[raw == v] = i
  return out


def to_channels(image: np.ndarray, channels: int, name: str) -> np.ndarray:
  """``(h, w, channels)``: grey images are repeated to ``channels``; 0 keeps what is stored."""
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3:
    raise ValueError(
      f"image_folder: image {name} must be (height, width) or (height, width, channels), got "
      f"shape {image.shape}."
    )
  if channels and image.shape[-1] != channels:
    if image.shape[-1] != 1:
      raise ValueError(
        f"image_folder: image {name} has {image.shape[-1]} channels, but channels={channels}."
      )
    image = np.repeat(image, channels, axis=-1)
  return image


class Decoder:
  """Record -> ``(image, label, file_name)``, with the checks that name the file (picklable)."""

  def __init__(self, options: Options):
    self.options = options

  def __call__(self, record):
    name = _text(record["file_name"])
    image = read_array(record["image"], _text(record["image_format"]), name)
    image = to_channels(image, self.options.channels, name)
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == np.bool_):
      raise ValueError(f"image_folder: image {name} has non-numeric dtype {image.dtype}.")
    mask_name = _text(record["mask_name"])
    raw = read_mask(record["mask"], _text(record["mask_format"]), mask_name)
    if raw.shape != image.shape[:2]:
      raise ValueError(
        f"image_folder: mask {mask_name} has size {raw.shape}, but its image {name} has size "
        f"{image.shape[:2]}."
      )
    return image, map_mask(raw, self.options, mask_name), name


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


# ----------------------------------------------------------------------------------------------
# The tfds builder.


@dataclasses.dataclass(eq=False)
class FolderConfig(tfds.core.BuilderConfig):
  """Builder config: the folder options plus the resolved file lists per split."""

  options: Options | None = None
  files: dict | None = None


class SegImageFolder(tfds.core.GeneratorBasedBuilder):
  """A user's images/ + masks/ folder as a segmentation data set (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  BUILDER_CONFIGS = []

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls):
    """No files beside the code (avoids tfds's need for ``importlib_resources``)."""
    return None

  def _info(self) -> tfds.core.DatasetInfo:
    options = self.builder_config.options
    return tfds.core.DatasetInfo(
      builder=self,
      description=f"Images and masks from {os.path.abspath(options.path)}.",
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(shape=(), dtype=np.object_),
          "image_format": tfds.features.Text(),
          "mask": tfds.features.Tensor(shape=(), dtype=np.object_),
          "mask_format": tfds.features.Text(),
          "file_name": tfds.features.Text(),
          "mask_name": tfds.features.Text(),
        }
      ),
      metadata=tfds.core.MetadataDict(class_names=list(options.names)),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    files = self.builder_config.files
    self._check_channels(files)
    return {split: self._generate_examples(pairs) for split, pairs in files.items()}

  def _check_channels(self, files):
    """Every image decodes, and (with channels=0) all have the same channel count."""
    options = self.builder_config.options
    decoder = Decoder(options)
    first = None
    for pairs in files.values():
      for _, image_path, mask_path in pairs:
        image, _, _ = decoder(_record(image_path, mask_path))
        if first is None:
          first = (image.shape[-1], image_path)
        elif image.shape[-1] != first[0]:
          raise ValueError(
            f"image_folder: image {image_path} has {image.shape[-1]} channels but "
            f"{first[1]} has {first[0]}; set channels= to convert grey images, or make them "
            "agree."
          )

  def _generate_examples(self, pairs):
    for stem, image_path, mask_path in pairs:
      yield stem, _record(image_path, mask_path)


def _record(image_path: str, mask_path: str) -> dict:
  def read(path):
    try:
      with open(path, "rb") as f:
        return f.read()
    except OSError as err:
      raise ValueError(f"image_folder: cannot read {path}: {err}") from None

  return {
    "image": read(image_path),
    "image_format": os.path.splitext(image_path)[1].lower(),
    "mask": read(mask_path),
    "mask_format": os.path.splitext(mask_path)[1].lower(),
    "file_name": image_path,
    "mask_name": mask_path,
  }


def make_config(options: Options) -> FolderConfig:
  """The builder config, named by a hash of the options and every file's name, size, mtime."""
  files = split_files(options)
  state = {"root": os.path.abspath(options.path), "options": dataclasses.asdict(options)}
  state["files"] = {
    split: [
      (p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for _, ip, mp in pairs for p in (ip, mp)
    ]
    for split, pairs in files.items()
  }
  key = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
  return FolderConfig(name=f"f{key}", options=options, files=files)


def load(
  options: Options,
  *,
  data_dir: str | None,
  image_size: int,
  augment: Augment | None = None,
  num_threads: int = 2,
  prefetch: int = 2,
  num_workers: int = 0,
) -> SegDataset:
  """Builds (first time, or after the folder changed) and returns the folder's data set.

  Args:
    options: what the folder holds (:class:`Options`).
    data_dir: tfds data directory for the built copy (``None``: tfds's default).
    image_size: side of the square examples (images of other sizes are resized).
    augment, num_threads, prefetch, num_workers: see :class:`SegDataset`.

  Raises:
    ValueError: a bad folder or file; the message names the file.
  """
  config = make_config(options)
  builder = _build.prepared_builder(
    lambda: SegImageFolder(config=config, data_dir=data_dir, file_format="array_record")
  )
  sources = {split: builder.as_data_source(split=split) for split in config.files}
  decoder = Decoder(options)
  first_split = "train"
  in_channels = decoder(sources[first_split][0])[0].shape[-1]
  return SegDataset(
    name=f"image_folder:{os.path.abspath(options.path)}",
    num_classes=options.num_classes,
    class_names=options.names,
    in_channels=int(in_channels),
    spatial_shape=(int(image_size), int(image_size)),
    ignore_index=options.ignore_index,
    sources=sources,
    decode=decoder,
    augment=augment or Augment(),
    num_threads=num_threads,
    prefetch=prefetch,
    num_workers=num_workers,
  )


def options_from_config(folder_config) -> Options:
  """:class:`Options` from ``config.data.folder`` (an ml_collections ConfigDict or a mapping)."""
  get = folder_config.get
  ignore = get("ignore_index", None)
  return Options(
    path=str(get("path", "")),
    num_classes=int(get("num_classes", 2)),
    class_names=tuple(get("class_names", ()) or ()),
    mask_values=tuple(get("mask_values", ()) or ()),
    ignore_index=None if ignore is None or ignore < 0 else int(ignore),
    channels=int(get("channels", 0)),
    validation_fraction=float(get("validation_fraction", 0.2)),
    split_seed=int(get("split_seed", 0)),
  )
