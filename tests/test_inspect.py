"""seg_jax.choosing.inspect and .recommend, and the seg_jax.inspect command: stats, rules, CLI.

Reference values are hand counts of the drawn masks (see ``_draw_folder``), not outputs of the code.
"""

import inspect
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from PIL import Image

import seg_jax.inspect as inspect_cli
from seg_jax.choosing import inspect as seg_inspect
from seg_jax.choosing import recommend
from seg_jax.data import image_folder, synthetic_shapes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 16  # Side of the hand-drawn masks.
IGNORE = 255


def _masks():
  """Three 16x16 train masks (classes 0, 1, 2; 255 ignored) with hand-countable content.

  a: class 1 square 6x6 at rows/cols 2..7 (36 px: a ring of 20 px at distance 1, a ring of 12
     at distance 2, the inner 2x2 at distance 3 -> width 2*3-1 = 5, elongation 36/25 < 4, not
     thin; 32 px within 2 px of the boundary); class 2 line, row 12, cols 1..12 (12 px, width 1,
     elongation 12: thin).
  b: no foreground; 4 ignored pixels.
  c: class 1 pixels (0,0) and (1,1), touching by a corner: ONE component of 2 px with
     8-connectivity (width 1, elongation 2: not thin); class 1 band rows 5..7, cols 1..14 (42 px,
     max distance 2 -> width 3, elongation 42/9 = 4.67: thin; all within 2 px of the boundary).
  """
  a = np.zeros((N, N), np.uint8)
  a[2:8, 2:8] = 1
  a[12, 1:13] = 2
  b = np.zeros((N, N), np.uint8)
  b[0, :4] = IGNORE
  c = np.zeros((N, N), np.uint8)
  c[0, 0] = c[1, 1] = 1
  c[5:8, 1:15] = 1
  return {"a": a, "b": b, "c": c}


# Hand counts over the train split (3 images, 768 px, 4 ignored -> 764 kept).
KEPT = 3 * N * N - 4
EXPECTED_PIXELS = {0: KEPT - 92, 1: 36 + 2 + 42, 2: 12}
EXPECTED_ABSENT = {0: 0.0, 1: 1 / 3, 2: 2 / 3}
EXPECTED_SIZES = {1: [36, 2, 42], 2: [12]}
EXPECTED_COUNTS = {1: [1, 0, 2], 2: [1, 0, 0]}
EXPECTED_THIN = {1: 42 / 80, 2: 1.0}
EXPECTED_BOUNDARY = {1: (32 + 2 + 42) / 80, 2: 1.0}
EXPECTED_FG = [48 / 256, 0.0, 44 / 256]


def _save(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """The masks above as an image_folder (train/ + validation/ layout), random RGB images."""
  root = tmp_path_factory.mktemp("folder")
  rng = np.random.default_rng(0)
  for stem, mask in _masks().items():
    _save(f"{root}/data/train/images/{stem}.png", rng.integers(0, 256, (N, N, 3), np.uint8))
    _save(f"{root}/data/train/masks/{stem}.png", mask)
  _save(f"{root}/data/validation/images/v.png", rng.integers(0, 256, (N, N, 3), np.uint8))
  _save(f"{root}/data/validation/masks/v.png", np.ones((N, N), np.uint8))
  return {"path": str(root / "data"), "data_dir": str(root / "tfds")}


def _check_hand_counts(stats):
  assert stats["num_images"] == 3 and stats["num_classes"] == 3
  np.testing.assert_allclose(stats["ignored_fraction"], 4 / (3 * N * N))
  np.testing.assert_allclose(stats["empty_fraction"], 1 / 3)
  fg = stats["foreground_fraction"]
  np.testing.assert_allclose(fg["mean"], np.mean(EXPECTED_FG))
  np.testing.assert_allclose(fg["quantiles"]["median"], 44 / 256)
  np.testing.assert_allclose(fg["quantiles"]["max"], 48 / 256)
  counts = {b["bin"]: b["count"] for b in fg["histogram"]}
  assert counts["empty"] == 1 and counts["(10, 25 %]"] == 2 and sum(counts.values()) == 3
  for c in stats["classes"]:
    k = c["index"]
    np.testing.assert_allclose(c["pixel_fraction"], EXPECTED_PIXELS[k] / KEPT)
    np.testing.assert_allclose(c["absent_fraction"], EXPECTED_ABSENT[k])
    if k == 0:
      assert "num_components" not in c
      continue
    assert c["num_components"] == len(EXPECTED_SIZES[k])
    np.testing.assert_allclose(c["components_per_image"]["mean"], np.mean(EXPECTED_COUNTS[k]))
    assert c["components_per_image"]["max"] == max(EXPECTED_COUNTS[k])
    sizes = np.array(EXPECTED_SIZES[k], np.float64)
    for name, q in seg_inspect.QUANTILES.items():
      np.testing.assert_allclose(c["component_size_px"][name], np.quantile(sizes, q))
      np.testing.assert_allclose(c["component_size_fraction"][name], np.quantile(sizes / N**2, q))
    np.testing.assert_allclose(c["thin_fraction"], EXPECTED_THIN[k])
    np.testing.assert_allclose(c["boundary_fraction"], EXPECTED_BOUNDARY[k])


def test_label_statistics_hand_counts():
  masks = _masks()
  stats = seg_inspect.label_statistics(
    [masks[k] for k in "abc"],
    num_classes=3,
    class_names=("bg", "blob", "line"),
    ignore_index=IGNORE,
  )
  _check_hand_counts(stats)
  assert [c["name"] for c in stats["classes"]] == ["bg", "blob", "line"]
  json.dumps(stats)  # JSON-serialisable.


def test_connectivity_width_and_borders():
  """4-neighbours vs corners, the image border as a boundary, a class covering everything."""
  diag = np.eye(5, dtype=np.int64)  # 5 px joined by corners only: one component.
  stats = seg_inspect.label_statistics([diag], num_classes=2)
  c = stats["classes"][1]
  assert c["num_components"] == 1 and c["component_size_px"]["max"] == 5
  # Width 1, elongation 5 >= 4: thin.
  assert c["thin_fraction"] == 1.0
  full = np.ones((7, 7), np.int64)  # Border = boundary: distances 1, 2, 3, 4 (centre).
  c = seg_inspect.label_statistics([full], num_classes=2)["classes"][1]
  np.testing.assert_allclose(c["boundary_fraction"], (24 + 16) / 49)
  assert c["thin_fraction"] == 0.0  # width 7 > 5.
  assert seg_inspect.label_statistics([full], num_classes=2)["classes"][0]["absent_fraction"] == 1


def test_label_statistics_errors():
  with pytest.raises(ValueError, match=r"image 1: values \[3\] outside \[0, 3\)"):
    seg_inspect.label_statistics([np.zeros((4, 4), int), np.full((4, 4), 3)], num_classes=3)
  with pytest.raises(ValueError, match="labels must be integers"):
    seg_inspect.label_statistics([np.zeros((4, 4), np.float32)], num_classes=2)
  with pytest.raises(ValueError, match="no images"):
    seg_inspect.label_statistics([], num_classes=2)
  with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
    seg_inspect.label_statistics([np.zeros((4, 4), int)], num_classes=1)
  with pytest.raises(ValueError, match="2 class_names"):
    seg_inspect.label_statistics([np.zeros((4, 4), int)], num_classes=3, class_names=("a", "b"))


def test_inspect_image_folder(folder):
  ds = image_folder.load(
    image_folder.Options(
      path=folder["path"], num_classes=3, ignore_index=IGNORE, class_names=("bg", "blob", "line")
    ),
    data_dir=folder["data_dir"],
    image_size=N,
  )
  stats = seg_inspect.inspect_dataset(ds, "train")
  _check_hand_counts(stats)
  assert stats["split"] == "train" and stats["num_examples_total"] == 3
  assert stats["spatial_shape"] == [N, N] and stats["ignore_index"] == IGNORE
  assert seg_inspect.inspect_dataset(ds, "train", max_examples=1)["num_images"] == 1
  with pytest.raises(KeyError, match="valid splits"):
    seg_inspect.inspect_dataset(ds, "test")
  with pytest.raises(ValueError, match="max_examples must be a positive int"):
    seg_inspect.inspect_dataset(ds, "train", max_examples=0)


# ---------------------------------------------------------------------------------------------
# Rules, on constructed statistics.


def _stats(fg_fractions, *, thin=0.0, boundary=0.2, median=0.05, empty=0.0, absent=None):
  """Statistics with the given foreground pixel shares (one per foreground class)."""
  classes = [{"index": 0, "name": "background", "pixel_fraction": 1 - sum(fg_fractions)}]
  classes[0]["absent_fraction"] = 0.0
  for i, f in enumerate(fg_fractions, start=1):
    classes.append(
      {
        "index": i,
        "name": f"c{i}",
        "pixel_fraction": f,
        "absent_fraction": (absent or {}).get(i, empty),
        "thin_fraction": thin if i == 1 else 0.0,
        "boundary_fraction": boundary,
        "component_size_fraction": {"median": median},
      }
    )
  return {"classes": classes, "empty_fraction": empty}


def _rules(stats):
  return {a.rule: a for a in recommend.recommend(stats)}


def test_balanced_gives_the_baselines_only():
  advice = recommend.recommend(_stats([0.3]))
  assert [a.rule for a in advice] == ["baseline"]
  assert recommend.losses_to_try(advice) == ["cross_entropy", "dice_ce"]
  assert "balanced data" in advice[0].reason


def test_imbalance_rule():
  t = recommend.IMBALANCE_FRACTION
  assert "imbalance" not in _rules(_stats([t]))  # Strictly below the threshold.
  fired = _rules(_stats([0.5 * t]))["imbalance"]
  assert fired.losses == ("dice", "dice_ce", "dice_topk", "focal_tversky")
  assert "Dice + TopK" in fired.reason
  severe = _rules(_stats([0.5 * recommend.SEVERE_IMBALANCE_FRACTION]))["imbalance"]
  assert severe.losses == ("dice", "dice_ce", "dice_topk", "focal_tversky", "dice_focal")
  multi = _rules(_stats([0.3, 0.5 * t]))["imbalance"]
  assert multi.losses == ("dice", "dice_ce", "dice_topk", "focal_tversky", "generalized_dice")
  assert "'c2'" in multi.reason  # Names the rarest class.
  missing = _rules(_stats([0.0, 0.3]))["imbalance"]
  assert "'c1' never appears" in missing.reason and "dice_focal" in missing.losses
  assert recommend.losses_to_try(recommend.recommend(_stats([0.5 * t]))) == [
    "cross_entropy",
    "dice_ce",
    "dice",
    "dice_topk",
    "focal_tversky",
  ]


def test_thin_rule():
  s = recommend.THIN_MIN_SHARE
  fired = _rules(_stats([0.3], thin=s))["thin"]
  assert fired.losses == ("cldice", "dice_skeleton_recall")
  assert "Skeleton Recall" in fired.reason
  assert any("Kirchhoff" in src for src in fired.to_dict()["sources"])
  assert "thin" not in _rules(_stats([0.3], thin=0.99 * s))
  # A thin class is left to the skeleton losses: its boundary share alone does not fire the
  # boundary rule.
  assert "boundary" not in _rules(_stats([0.3], thin=s, boundary=1.0))


def test_boundary_rule():
  rules = _rules(_stats([0.3], boundary=recommend.BOUNDARY_MIN_SHARE))
  assert rules["boundary"].losses == ("dice_boundary", "dice_hausdorff")
  assert "boundary" not in _rules(_stats([0.3], boundary=0.49))
  small = _rules(_stats([0.3], median=0.5 * recommend.SMALL_OBJECT_FRACTION))
  assert "boundary" in small and "median object" in small["boundary"].reason
  assert "boundary" not in _rules(_stats([0.3], median=recommend.SMALL_OBJECT_FRACTION))


def test_empty_rule():
  e = recommend.EMPTY_MIN_FRACTION
  fired = _rules(_stats([0.3], empty=e))["empty"]
  assert fired.losses == ()  # Options only.
  assert {"per_image": False} in fired.options
  assert {"per_image": True, "ignore_empty": True} in fired.options
  assert "empty" not in _rules(_stats([0.3], empty=0.99 * e))
  # Several foreground classes: one absent from most images fires it too.
  absent = _rules(_stats([0.2, 0.2], absent={2: recommend.ABSENT_MIN_FRACTION}))
  assert "'c2' is absent" in absent["empty"].reason
  assert recommend.losses_to_try(recommend.recommend(_stats([0.3], empty=e))) == [
    "cross_entropy",
    "dice_ce",
  ]


def test_recommend_rejects_other_dicts():
  with pytest.raises(KeyError, match="label_statistics"):
    recommend.recommend({"classes": []})


def test_rules_of_the_hand_drawn_data():
  masks = _masks()
  stats = seg_inspect.label_statistics(
    [masks[k] for k in "abc"], num_classes=3, ignore_index=IGNORE
  )
  # Rarest class 12/764 = 1.6 % (imbalance, two foreground classes); both classes thin (52.5 %,
  # 100 %), so no boundary rule; a third of the images empty.
  assert list(_rules(stats)) == ["baseline", "imbalance", "thin", "empty"]
  assert recommend.losses_to_try(recommend.recommend(stats)) == [
    "cross_entropy",
    "dice_ce",
    "dice",
    "dice_topk",
    "focal_tversky",
    "generalized_dice",
    "cldice",
    "dice_skeleton_recall",
  ]


def test_rule_losses_are_registered():
  from seg_jax import losses

  rich = _stats([0.005, 0.3], thin=0.9, median=0.001, empty=0.5)
  rich["classes"][2]["boundary_fraction"] = 0.9
  names = recommend.losses_to_try(recommend.recommend(rich))
  assert set(names) <= set(losses.names())
  assert {
    "cldice",
    "dice_skeleton_recall",
    "dice_topk",
    "dice_boundary",
    "dice_hausdorff",
    "dice_focal",
    "generalized_dice",
  } <= set(names)


def test_docs_state_the_rules_and_thresholds():
  with open(os.path.join(REPO, "docs", "choosing.md"), encoding="utf-8") as f:
    text = f.read()
  section = text.split("## Rules used by seg_jax.inspect", 1)[1].split("\n## ", 1)[0]
  for rule in recommend.RULES:
    assert f"| `{rule.name}` |" in section, rule.name
  for name in (
    "IMBALANCE_FRACTION",
    "SEVERE_IMBALANCE_FRACTION",
    "THIN_MIN_SHARE",
    "THIN_MAX_WIDTH_PX",
    "THIN_MIN_ELONGATION",
    "BOUNDARY_BAND_PX",
    "BOUNDARY_MIN_SHARE",
    "SMALL_OBJECT_FRACTION",
    "EMPTY_MIN_FRACTION",
    "ABSENT_MIN_FRACTION",
  ):
    assert f"`{name} = {getattr(recommend, name):g}" in section, name
  for key in ("Sudre", "Shit", "Kervadec", "Karimi", "Isensee", "Ma J.", "Kodym"):
    assert key in section
  # The losses each rule recommends (named in its summary) are those of its row in the docs.
  import re

  from seg_jax import losses

  for rule in recommend.RULES:
    row = next(line for line in section.splitlines() if line.startswith(f"| `{rule.name}` |"))
    named = set(re.findall(r"[a-z_]+", rule.summary)) & set(losses.names())
    for name in named:
      assert f"`{name}`" in row, (rule.name, name)


def test_docs_carry_the_measured_comparison():
  with open(os.path.join(REPO, "docs", "choosing.md"), encoding="utf-8") as f:
    text = f.read()
  section = text.split("## Measured", 1)[1].split("\n## ", 1)[0]
  assert "<!-- MEASURED -->" not in section
  assert "python -m seg_jax.compare" in section
  for kind in ("imbalanced", "thin"):
    assert f"--config.data.config={kind}" in section
  # Every loss on both data sets (5 + 4), each with its 95 % interval.
  rows = [ln for ln in section.splitlines() if ln.startswith("| ") and "`" in ln and " [" in ln]
  assert len(rows) >= 9, rows
  assert "--seeds=3" in section
  # The flagged collapse, measured with the seeds protocol: command, verdict, table with CIs.
  demo = text.split("### A collapse, flagged", 1)[1].split("\n## ", 1)[0]
  assert "MEASURED_DEMO" not in demo
  assert "python -m seg_jax.compare" in demo and "--seeds=3" in demo
  assert "collapsed" in demo and "Significantly below it" in demo
  assert sum(line.startswith("| ") and "[" in line for line in demo.splitlines()) >= 2


# ---------------------------------------------------------------------------------------------
# Command line.


def test_compare_command_and_overrides():
  argv = ["--config=c.py", "--config.data.data_dir=/tmp/x y", "--config.data.config", "thin"]
  argv += ["--max_examples=3", "--config.train.steps=5"]
  overrides = seg_inspect.data_overrides(argv)
  assert overrides == ["--config.data.data_dir=/tmp/x y", "--config.data.config=thin"]
  assert seg_inspect.compare_command("c.py", ["dice", "cldice"], overrides) == (
    "python -m seg_jax.compare --config=c.py '--config.data.data_dir=/tmp/x y' "
    "--config.data.config=thin --losses=dice,cldice"
  )


def test_stdlib_inspect_is_not_shadowed():
  import seg_jax
  from seg_jax.losses import compound, registry

  assert inspect.__file__ != inspect_cli.__file__ and hasattr(inspect, "signature")
  assert registry.inspect is inspect and compound.inspect is inspect
  assert seg_jax.inspect is inspect_cli  # The submodule, only as an attribute of the package.
  assert registry.options("focal")  # Uses inspect.signature.


CONFIG = "configs/default.py"  # Relative to the repository root, where the commands run.


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, "-m", "seg_jax.inspect", *args],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=240,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def test_cli_default_synthetic_data(tmp_path):
  config = CONFIG
  data = [
    f"--config.data.data_dir={tmp_path / 'tfds'}",
    "--config.data.synthetic.num_train=12",
    "--config.data.synthetic.num_validation=2",
    "--config.data.synthetic.num_test=2",
  ]
  out = _cli(f"--config={config}", *data, "--max_examples=8")
  assert re.search(r"split 'train': 8 of 12 examples, \d+x\d+, 2 classes", out), out
  for heading in ("Class frequencies", "Foreground fraction per image", "Objects", "Test them:"):
    assert heading in out
  assert re.search(r"^\s+shape\s+\d+\.\d\d %", out, re.M), out
  # The balanced default data (foreground ~20 %, large compact shapes): the baselines only.
  assert "[baseline] cross_entropy, dice_ce" in out and "[imbalance]" not in out
  command = f"python -m seg_jax.compare --config={config} " + " ".join(data)
  assert command + " --losses=cross_entropy,dice_ce" in out


def _cli_in_process(*args):
  """The command run in this process: its own flags (absl's global FLAGS untouched)."""
  argv = ["seg_jax.inspect", *args]
  flag_values = flags.FlagValues()
  inspect_cli.define_flags(flag_values, argv)
  flag_values(argv)
  return inspect_cli.output(flag_values, argv)


def test_cli_image_folder_json(tmp_path, folder):
  config = os.path.join(REPO, CONFIG)  # In this process: the cwd may be anywhere.
  out = _cli_in_process(
    f"--config={config}",
    "--config.data.name=image_folder",
    f"--config.data.folder.path={folder['path']}",
    "--config.data.folder.num_classes=3",
    f"--config.data.folder.ignore_index={IGNORE}",
    f"--config.data.image_size={N}",
    f"--config.data.data_dir={folder['data_dir']}",
    "--json",
  )
  result = json.loads(out)
  _check_hand_counts(result["statistics"])
  assert result["losses"] == [
    "cross_entropy",
    "dice_ce",
    "dice",
    "dice_topk",
    "focal_tversky",
    "generalized_dice",
    "cldice",
    "dice_skeleton_recall",
  ]
  assert [r["rule"] for r in result["recommendations"]] == [
    "baseline",
    "imbalance",
    "thin",
    "empty",
  ]
  assert result["compare_command"].startswith(
    f"python -m seg_jax.compare --config={config} --config.data.name=image_folder "
  )
  assert result["compare_command"].endswith(" --losses=" + ",".join(result["losses"]))


@pytest.mark.parametrize(
  ("kind", "rule", "loss"), [("thin", "thin", "cldice"), ("imbalanced", "imbalance", "dice")]
)
def test_synthetic_kinds_fire_their_rules(tmp_path, kind, rule, loss):
  ds = synthetic_shapes.load(
    kind, data_dir=str(tmp_path), num_train=16, num_validation=1, num_test=1
  )
  result = seg_inspect.report(seg_inspect.inspect_dataset(ds, "train"))
  assert rule in [r["rule"] for r in result["recommendations"]]
  assert loss in result["losses"] and "--losses=cross_entropy,dice_ce," in result["text"]
