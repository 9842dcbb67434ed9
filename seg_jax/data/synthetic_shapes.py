r"""``synthetic_shapes``: procedurally generated segmentation images, built locally with tfds.

Every example is a ``size x size`` RGB image with a class map, drawn from its own random stream
``numpy.random.default_rng([seed, split_id, index])``: the data set is a pure function of the
builder config (kind, size, example counts, seed), so two builds are identical and examples do not
depend on each other or on the build order.

An image is composed as

.. math::

   x = \mathrm{clip}\Big(\gamma\,\big(G_\sigma * \textstyle\sum_k m_k\,(c_k\,(1 + a\,s) + t_k)
       - \tfrac12\big) + \tfrac12 + \beta + \epsilon,\ 0,\ 1\Big),

where :math:`m_k` is the mask of class :math:`k` (0 = background), :math:`c_k` its colour for
this image, :math:`s` a smooth illumination field shared by all classes, :math:`t_k` the class
texture (oriented stripes for the background, speckle, checks or none for the objects),
:math:`G_\sigma` a Gaussian blur (:math:`\sigma \sim U[0.3, 0.9]` px), :math:`\gamma,\beta` a
random contrast and brightness and :math:`\epsilon` pixel noise
(:math:`\sigma_\epsilon \sim U[0.02, 0.07]`). The object colour is the background colour moved by
a random step in a random RGB direction, brighter or darker with equal probability, so no single
intensity threshold separates the classes over the data set: a model has to compare an object
with its surroundings and use texture and shape.

Builder configs (``kind``):

* ``balanced`` (default): binary; 2-5 ellipses and star-shaped polygons, foreground around 20 %
  of the pixels.
* ``imbalanced``: binary; 1-2 small objects, foreground around 2 % of the pixels (1-3 %).
* ``thin``: binary; dark, branching, vessel-like curves 1.2-3 px wide on a textured background.
* ``multiclass``: 4 classes ``background, ellipse, polygon, curve``; each object class has its
  own colour bias and texture, ellipses and polygons are also told apart by their shape.

Splits ``train``, ``validation``, ``test`` (default 1000 / 200 / 200 examples of 64 x 64).
Features: ``image`` (uint8 PNG, ``(size, size, 3)``), ``segmentation_mask`` (uint8 PNG class
map, ``(size, size, 1)``), ``id`` (text ``'<split>/<index>'``, the generation index, which
differs from the position in the ArrayRecord file because tfds shuffles records by key).

Example::

  from seg_jax.data import synthetic_shapes
  builder = synthetic_shapes.builder('balanced', data_dir='/tmp/tfds', num_train=20,
                                     num_validation=4, num_test=4)
  builder.download_and_prepare(file_format='array_record')
  ex = builder.as_data_source(split='train')[0]
  ex['image'].shape, ex['segmentation_mask'].shape   # ((64, 64, 3), (64, 64, 1))

Bump ``VERSION`` whenever the generator changes: built copies are cached by version.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from scipy import ndimage
from tensorflow_datasets.core import utils as tfds_utils

from seg_jax.data import _build
from seg_jax.data.dataset import Augment, SegDataset

KINDS = ("balanced", "imbalanced", "thin", "multiclass")
CLASS_NAMES = {
  "balanced": ("background", "shape"),
  "imbalanced": ("background", "shape"),
  "thin": ("background", "curve"),
  "multiclass": ("background", "ellipse", "polygon", "curve"),
}
SPLITS = ("train", "validation", "test")
DEFAULT_IMAGE_SIZE = 64
DEFAULT_NUM_EXAMPLES = {"train": 1000, "validation": 200, "test": 200}


@dataclasses.dataclass(eq=False)
class SyntheticShapesConfig(tfds.core.BuilderConfig):
  """Builder config of :class:`SyntheticShapes`.

  Attributes:
    kind: one of ``KINDS``: which objects are drawn and how many classes there are.
    image_size: side of the square images, in pixels (>= 16).
    num_train, num_validation, num_test: number of examples per split (>= 1).
    seed: generation seed; every example is a function of (seed, split, index).
  """

  kind: str = "balanced"
  image_size: int = DEFAULT_IMAGE_SIZE
  num_train: int = DEFAULT_NUM_EXAMPLES["train"]
  num_validation: int = DEFAULT_NUM_EXAMPLES["validation"]
  num_test: int = DEFAULT_NUM_EXAMPLES["test"]
  seed: int = 0

  def __reduce__(self):
    # A registered config must unpickle (e.g. in a grain worker) to the registered instance:
    # tfds refuses a copy that bears a registered name.
    registered = SyntheticShapes.builder_configs.get(self.name)
    if registered is not None and dataclasses.astuple(registered) == dataclasses.astuple(self):
      return _registered_config, (self.name,)
    return super().__reduce__()

  def num_examples(self, split: str) -> int:
    return {"train": self.num_train, "validation": self.num_validation, "test": self.num_test}[
      split
    ]


_DESCRIPTIONS = {
  "balanced": "Binary: ellipses and polygons, foreground around 20 % of the pixels.",
  "imbalanced": "Binary: 1-2 small objects, foreground around 2 % of the pixels.",
  "thin": "Binary: thin, branching, vessel-like curves.",
  "multiclass": "4 classes: background, ellipse, polygon, curve.",
}


class SyntheticShapes(tfds.core.GeneratorBasedBuilder):
  """Procedural segmentation data: textured, noisy images of ellipses, polygons and curves."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  BUILDER_CONFIGS = [
    SyntheticShapesConfig(name=kind, kind=kind, description=_DESCRIPTIONS[kind]) for kind in KINDS
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "balanced"

  @tfds_utils.classproperty
  @classmethod
  def code_path(cls):
    """No source files beside the code (nothing to download, no checksums file).

    tfds's own lookup of this path needs the ``importlib_resources`` package for builders
    defined in an installed package; returning ``None`` avoids that dependency.
    """
    return None

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    size = cfg.image_size
    return tfds.core.DatasetInfo(
      builder=self,
      description=__doc__.split("\n\n")[0],
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(size, size, 3)),
          "segmentation_mask": tfds.features.Image(shape=(size, size, 1)),
          "id": tfds.features.Text(),
        }
      ),
      supervised_keys=("image", "segmentation_mask"),
      metadata=tfds.core.MetadataDict(class_names=list(CLASS_NAMES[cfg.kind])),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split: str):
    cfg = self.builder_config
    for index in range(cfg.num_examples(split)):
      image, mask = generate_example(cfg.kind, cfg.image_size, cfg.seed, split, index)
      yield (
        index,
        {"image": _png(image), "segmentation_mask": _png(mask), "id": f"{split}/{index}"},
      )


def _registered_config(name: str) -> SyntheticShapesConfig:
  return SyntheticShapes.builder_configs[name]


def make_config(
  kind: str = "balanced",
  *,
  image_size: int = DEFAULT_IMAGE_SIZE,
  num_train: int = DEFAULT_NUM_EXAMPLES["train"],
  num_validation: int = DEFAULT_NUM_EXAMPLES["validation"],
  num_test: int = DEFAULT_NUM_EXAMPLES["test"],
  seed: int = 0,
) -> SyntheticShapesConfig:
  """Returns the builder config for these settings.

  The registered config (``'balanced'``, ...) when every setting has its default, else a custom
  config whose name encodes the settings (e.g. ``'balanced_s32_n100.20.20_seed3'``), so each
  variant is built into its own directory.

  Raises:
    ValueError: unknown ``kind``, ``image_size < 16``, a negative seed or an example count
      below 1.
  """
  if kind not in KINDS:
    raise ValueError(f"synthetic_shapes: unknown config {kind!r}; valid configs are {KINDS}.")
  if int(image_size) < 16:
    raise ValueError(f"synthetic_shapes: image_size must be >= 16, got {image_size}.")
  if int(seed) < 0:
    raise ValueError(f"synthetic_shapes: seed must be >= 0, got {seed}.")
  counts = (int(num_train), int(num_validation), int(num_test))
  if min(counts) < 1:
    raise ValueError(
      f"synthetic_shapes: example counts must be >= 1, got num_train={num_train}, "
      f"num_validation={num_validation}, num_test={num_test}."
    )
  defaults = (
    int(image_size) == DEFAULT_IMAGE_SIZE
    and counts == tuple(DEFAULT_NUM_EXAMPLES[s] for s in SPLITS)
    and int(seed) == 0
  )
  if defaults:
    return SyntheticShapes.builder_configs[kind]
  name = f"{kind}_s{int(image_size)}_n{counts[0]}.{counts[1]}.{counts[2]}_seed{int(seed)}"
  return SyntheticShapesConfig(
    name=name,
    kind=kind,
    image_size=int(image_size),
    num_train=counts[0],
    num_validation=counts[1],
    num_test=counts[2],
    seed=int(seed),
    description=_DESCRIPTIONS[kind],
  )


def builder(kind: str = "balanced", *, data_dir: str | None = None, **settings) -> SyntheticShapes:
  """Returns a :class:`SyntheticShapes` builder (ArrayRecord format) for ``make_config(...)``.

  Args:
    kind: builder config, one of ``KINDS``.
    data_dir: tfds data directory (``None``: tfds's default, ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``).
    **settings: ``image_size``, ``num_train``, ``num_validation``, ``num_test``, ``seed`` (see
      :func:`make_config`).
  """
  return SyntheticShapes(
    config=make_config(kind, **settings), data_dir=data_dir, file_format="array_record"
  )


# ----------------------------------------------------------------------------------------------
# Generation (pure NumPy; every random draw comes from the example's own generator).


def generate_example(
  kind: str, size: int, seed: int, split: str, index: int
) -> tuple[np.ndarray, np.ndarray]:
  """Returns ``(image uint8 (size, size, 3), mask uint8 (size, size))`` of one example."""
  if kind not in KINDS:
    raise ValueError(f"synthetic_shapes: unknown kind {kind!r}; valid kinds are {KINDS}.")
  rng = np.random.default_rng([int(seed), SPLITS.index(split), int(index)])
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
  grid = (xx, yy)
  for _ in range(100):  # Redraw the (rare) layouts that leave no foreground at all.
    mask = _draw_mask(kind, size, grid, rng)
    if mask.any():
      break
  image = _render(kind, mask, size, grid, rng)
  return image, mask


def _draw_mask(kind, size, grid, rng) -> np.ndarray:
  mask = np.zeros((size, size), np.uint8)
  s = size / 64.0  # Object sizes are set for 64 px and scale with the image.
  if kind == "balanced":
    for _ in range(rng.integers(2, 6)):
      shape = _ellipse if rng.random() < 0.5 else _polygon
      mask[shape(grid, rng, size, radius=(7 * s, 17 * s))] = 1
  elif kind == "imbalanced":
    for _ in range(rng.integers(1, 3)):
      shape = _ellipse if rng.random() < 0.5 else _polygon
      for _ in range(100):  # Redraw objects that fall (almost) outside the image.
        obj = shape(grid, rng, size, radius=(3 * s, 6.5 * s))
        if obj.sum() >= 12 * s * s:
          break
      mask[obj] = 1
  elif kind == "thin":
    for _ in range(rng.integers(1, 3)):
      mask[_curve(grid, rng, size, width=(1.2 * s, 3.0 * s))] = 1
  else:  # multiclass: later objects are drawn over earlier ones.
    objects = [1] * rng.integers(1, 3) + [2] * rng.integers(1, 3) + [3] * rng.integers(0, 2)
    for label in rng.permutation(objects):
      if label == 1:
        mask[_ellipse(grid, rng, size, radius=(5 * s, 13 * s))] = 1
      elif label == 2:
        mask[_polygon(grid, rng, size, radius=(6 * s, 15 * s))] = 2
      else:
        mask[_curve(grid, rng, size, width=(1.5 * s, 3.0 * s), branch_prob=0.0)] = 3
  return mask


def _ellipse(grid, rng, size, radius) -> np.ndarray:
  xx, yy = grid
  a, b = rng.uniform(*radius, size=2)
  cx, cy = rng.uniform(0.1 * size, 0.9 * size, size=2)
  theta = rng.uniform(0, np.pi)
  dx, dy = xx - cx, yy - cy
  u = dx * np.cos(theta) + dy * np.sin(theta)
  v = -dx * np.sin(theta) + dy * np.cos(theta)
  return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _polygon(grid, rng, size, radius) -> np.ndarray:
  """A star-shaped polygon of 3-7 vertices around a random centre (even-odd fill)."""
  xx, yy = grid
  n = int(rng.integers(3, 8))
  r = rng.uniform(*radius)
  cx, cy = rng.uniform(0.1 * size, 0.9 * size, size=2)
  angles = np.sort(rng.uniform(0, 2 * np.pi, n) + np.arange(n) * 2 * np.pi / n) % (2 * np.pi)
  angles = np.sort(angles)
  radii = r * rng.uniform(0.6, 1.0, n)
  px, py = cx + radii * np.cos(angles), cy + radii * np.sin(angles)
  inside = np.zeros(xx.shape, bool)
  for i in range(n):
    x0, y0, x1, y1 = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
    if y0 == y1:
      continue
    crosses = (y0 > yy) != (y1 > yy)
    x_at = x0 + (yy - y0) * (x1 - x0) / (y1 - y0)
    inside ^= crosses & (xx < x_at)
  return inside


def _curve(grid, rng, size, width, branch_prob=0.5) -> np.ndarray:
  """A smooth random-walk curve entering from the border, tapering, with optional branches."""
  xx, yy = grid
  side = rng.integers(4)
  t = rng.uniform(0.15, 0.85) * size
  start = [(t, 0.0), (size, t), (t, size), (0.0, t)][side]
  heading = [np.pi / 2, np.pi, -np.pi / 2, 0.0][side] + rng.uniform(-0.6, 0.6)
  pending = [(np.array(start), heading, rng.uniform(*width), 0)]
  segments, widths = [], []
  step = 1.5 * size / 64
  while pending:
    pos, heading, w, depth = pending.pop()
    curvature = 0.0
    for _ in range(int(1.6 * size / step)):
      curvature = 0.8 * curvature + rng.normal(0, 0.08)
      heading += curvature
      new = pos + step * np.array([np.cos(heading), np.sin(heading)])
      segments.append((pos, new))
      widths.append(w)
      pos = new
      w = max(0.995 * w, 1.0)
      if not (-2 <= pos[0] <= size + 2 and -2 <= pos[1] <= size + 2):
        break
      if depth < 2 and rng.random() < branch_prob * 0.04:
        side_turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.0)
        pending.append((pos.copy(), heading + side_turn, max(0.7 * w, 1.0), depth + 1))
  inside = np.zeros(xx.shape, bool)
  for (a, b), w in zip(segments, widths, strict=True):
    # Pixels whose centre lies within w/2 of segment ab, searched in the segment's bounding box.
    r = w / 2
    x0, x1 = max(int(min(a[0], b[0]) - r), 0), min(int(max(a[0], b[0]) + r) + 1, size)
    y0, y1 = max(int(min(a[1], b[1]) - r), 0), min(int(max(a[1], b[1]) + r) + 1, size)
    if x0 >= x1 or y0 >= y1:
      continue
    px, py = xx[y0:y1, x0:x1] - a[0], yy[y0:y1, x0:x1] - a[1]
    ab = b - a
    t = np.clip((px * ab[0] + py * ab[1]) / max(ab @ ab, 1e-12), 0.0, 1.0)
    dist2 = (px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2
    inside[y0:y1, x0:x1] |= dist2 <= r * r
  return inside


def _smooth_field(rng, grid, size, n=4) -> np.ndarray:
  xx, yy = grid
  field = np.zeros_like(xx)
  for _ in range(n):
    theta = rng.uniform(0, 2 * np.pi)
    wavelength = rng.uniform(0.4, 1.2) * size
    field += np.sin(
      2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / wavelength + rng.uniform(0, 2 * np.pi)
    )
  return field / n


def _stripes(rng, grid, period) -> np.ndarray:
  xx, yy = grid
  theta = rng.uniform(0, np.pi)
  p = rng.uniform(*period)
  return np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / p + rng.uniform(0, 6.3))


def _speckle(rng, size, sigma=0.8) -> np.ndarray:
  noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma)
  return noise / max(noise.std(), 1e-6)


def _checks(rng, grid, period) -> np.ndarray:
  xx, yy = grid
  p = rng.uniform(*period)
  ox, oy = rng.uniform(0, p, 2)
  return np.where(((xx + ox) // p + (yy + oy) // p) % 2 == 0, 1.0, -1.0)


def _unit(rng) -> np.ndarray:
  v = rng.normal(size=3)
  return v / np.linalg.norm(v)


_CLASS_BIAS = {  # Colour direction added to each multiclass object's random direction.
  1: np.array([1.0, -0.5, -0.5]),
  2: np.array([-0.5, -0.5, 1.0]),
  3: np.array([-0.6, -0.6, -0.6]),
}


def _render(kind, mask, size, grid, rng) -> np.ndarray:
  """Paints class colours and textures, then illumination, blur, contrast and noise."""
  num_classes = len(CLASS_NAMES[kind])
  bg = rng.uniform(0.25, 0.75, 3)
  colours = [bg]
  textures = [0.09 * rng.uniform(0.5, 1.0) * _stripes(rng, grid, period=(3.0, 7.0))]
  for label in range(1, num_classes):
    sign = rng.choice([-1.0, 1.0])
    if kind == "thin":
      direction, step = -np.abs(_unit(rng)) - 0.5, rng.uniform(0.12, 0.25)
      texture = np.zeros((size, size))
    elif kind == "multiclass":
      direction = _CLASS_BIAS[label] + 0.6 * _unit(rng)
      step = rng.uniform(0.15, 0.3)
      texture = {
        1: lambda: 0.07 * _speckle(rng, size),
        2: lambda: 0.07 * _checks(rng, grid, period=(2.5, 4.0)),
        3: lambda: np.zeros((size, size)),
      }[label]()
    else:
      direction, step = sign * _unit(rng), rng.uniform(0.12, 0.3)
      texture = 0.08 * _speckle(rng, size)
    colours.append(bg + step * direction / np.linalg.norm(direction))
    textures.append(texture)
  colours = np.clip(np.asarray(colours), 0.05, 0.95)
  textures = np.stack(textures)  # (K, H, W)
  illumination = 1.0 + rng.uniform(0.1, 0.3) * _smooth_field(rng, grid, size)
  image = (
    colours[mask] * illumination[..., None] + textures[mask, *np.indices(mask.shape)][..., None]
  )
  image = ndimage.gaussian_filter(image, sigma=(rng.uniform(0.3, 0.9),) * 2 + (0,))
  image = (image - 0.5) * rng.uniform(0.7, 1.3) + 0.5 + rng.uniform(-0.1, 0.1)
  image = image + rng.normal(0, rng.uniform(0.02, 0.07), image.shape)
  return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def _png(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def load(
  kind: str = "balanced",
  *,
  data_dir: str | None = None,
  image_size: int = DEFAULT_IMAGE_SIZE,
  num_train: int = DEFAULT_NUM_EXAMPLES["train"],
  num_validation: int = DEFAULT_NUM_EXAMPLES["validation"],
  num_test: int = DEFAULT_NUM_EXAMPLES["test"],
  seed: int = 0,
  augment: Augment | None = None,
  num_threads: int = 2,
  prefetch: int = 2,
  num_workers: int = 0,
) -> SegDataset:
  """Builds (on first use, into ``data_dir``) and returns ``synthetic_shapes/<kind>``.

  Args:
    kind, image_size, num_train, num_validation, num_test, seed: see :func:`make_config`.
    data_dir: tfds data directory (``None``: tfds's default).
    augment, num_threads, prefetch, num_workers: see :class:`SegDataset`.
  """
  config = make_config(
    kind,
    image_size=image_size,
    num_train=num_train,
    num_validation=num_validation,
    num_test=num_test,
    seed=seed,
  )
  b = _build.prepared_builder(
    lambda: SyntheticShapes(config=config, data_dir=data_dir, file_format="array_record")
  )
  return SegDataset(
    name=f"synthetic_shapes/{config.name}",
    num_classes=len(CLASS_NAMES[kind]),
    class_names=CLASS_NAMES[kind],
    in_channels=3,
    spatial_shape=(config.image_size, config.image_size),
    ignore_index=None,
    sources={split: b.as_data_source(split=split) for split in SPLITS},
    decode=_decode,
    augment=augment or Augment(),
    num_threads=num_threads,
    prefetch=prefetch,
    num_workers=num_workers,
  )


def _decode(record) -> tuple[np.ndarray, np.ndarray, str]:
  ident = record["id"]
  return (
    record["image"],
    record["segmentation_mask"],
    ident.decode() if isinstance(ident, bytes) else str(ident),
  )
