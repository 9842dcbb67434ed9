"""Configs: one per registry loss, each valid and runnable; bad configs fail with clear errors."""

import importlib.util
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from seg_jax import losses
from seg_jax.training import config as train_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
if str(ROOT) not in sys.path:  # The config files import `configs.default`, as launch.py does.
  sys.path.insert(0, str(ROOT))


def load_config(name: str) -> ml_collections.ConfigDict:
  path = CONFIGS / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"_test_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def config_module_doc(name: str) -> str:
  path = CONFIGS / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"_test_doc_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.__doc__


def test_every_registry_loss_has_a_config_file():
  files = {p.stem for p in CONFIGS.glob("*.py")} - {"__init__", "default", "runlocal"}
  assert set(losses.names()) <= files, sorted(set(losses.names()) - files)
  assert files - set(losses.names()) == set(), "config files for losses not in the registry"


@pytest.mark.parametrize("name", ["default", "runlocal", *losses.names()])
def test_config_is_valid_and_documents_its_command(name):
  config = load_config(name)
  train_config.validate(config)
  doc = config_module_doc(name)
  assert f"python launch.py --config=configs/{name}.py" in doc
  if name not in ("default", "runlocal"):
    assert config.loss.name == name
    # It derives from the default: everything but the loss is the default experiment.
    default = load_config("default")
    for section in ("model", "data", "train"):
      assert config[section].to_dict() == default[section].to_dict(), section


def test_per_loss_configs_trace_their_loss():
  """Each config's loss, with its options, traces (every option checked) and gives a scalar
  value and a gradient of the logits' shape for the output the trainer's model produces on the
  default binary data: one channel. (Traced, not compiled: the losses' own tests run them.)"""
  logits = jax.ShapeDtypeStruct((2, 16, 16, 1), jnp.float32)
  labels = jax.ShapeDtypeStruct((2, 16, 16), jnp.int32)
  for name in losses.names():
    config = load_config(name)
    assert train_config.output_channels(config, 2) == 1
    fn = losses.get(config.loss.name, **train_config.loss_options(config))
    value, grad = jax.eval_shape(jax.value_and_grad(fn), logits, labels)
    assert value.shape == () and value.dtype == jnp.float32, name
    assert grad.shape == logits.shape, name


def test_output_channels():
  config = train_config.default_config()
  assert train_config.output_channels(config, 2) == 1  # binary: one sigmoid channel
  assert train_config.output_channels(config, 4) == 4
  config.loss.options.mode = "multiclass"
  assert train_config.output_channels(config, 2) == 2  # softmax over 2 channels


def _default():
  return train_config.default_config()


def _raises(config, error, *patterns):
  with pytest.raises(error) as info:
    train_config.validate(config)
  for pattern in patterns:
    assert re.search(pattern, str(info.value)), (pattern, str(info.value))


def test_unknown_loss_name():
  config = _default()
  config.loss.name = "dicee"
  _raises(config, ValueError, r"config\.loss\.name", "'dicee'", "Did you mean 'dice'", "focal")


def test_unknown_loss_option():
  config = _default()
  config.loss.name = "focal"
  config.loss.options.gama = 2.0
  _raises(config, TypeError, r"config\.loss\.options", "'gama'", "gamma")


def test_reserved_loss_option():
  config = _default()
  config.loss.options.axis_name = "batch"
  _raises(config, ValueError, "axis_name", "set by the trainer")


def test_unknown_dataset_name():
  config = _default()
  config.data.name = "synthetic_shape"
  _raises(config, ValueError, r"config\.data\.name", "'synthetic_shape'", "synthetic_shapes")


def test_unknown_field_with_suggestion():
  config = _default()
  config.train.stepz = 10
  _raises(config, ValueError, r"config\.train\.stepz", "Did you mean 'steps'")
  config = _default()
  config.model.feature = 8
  _raises(config, ValueError, r"config\.model\.feature", "'features'")
  config = _default()
  config.optim = ml_collections.ConfigDict()
  _raises(config, ValueError, r"config\.optim: unknown section")
  config = _default()
  config.data.augment.flip = True
  _raises(config, ValueError, r"config\.data\.augment\.flip")


def test_missing_field():
  config = _default()
  del config.train["seed"]
  _raises(config, ValueError, r"config\.train\.seed is missing")


@pytest.mark.parametrize(
  "section, field, value, expected",
  [
    ("train", "steps", "100", "int"),
    ("train", "steps", 10.0, "int"),
    ("train", "batch_size", True, "int"),
    ("train", "learning_rate", "1e-3", "float"),
    ("train", "async_checkpoints", 1, "bool"),
    ("model", "norm", 3, "str"),
    ("data", "image_size", "64", "int"),
  ],
)
def test_wrong_type(section, field, value, expected):
  # A config file can build fields of any type (ConfigDict only checks later assignments).
  config = _default()
  config[section] = ml_collections.ConfigDict(
    {**config[section].to_dict(), field: value}, type_safe=False
  )
  _raises(
    config, TypeError, rf"config\.{section}\.{field} must be {expected}", re.escape(repr(value))
  )


@pytest.mark.parametrize(
  "section, field, value, pattern",
  [
    ("train", "steps", 0, r"config\.train\.steps must be > 0"),
    ("train", "warmup_steps", 600, "warmup_steps=600 must be smaller"),
    ("train", "b2", 1.0, r"b2 must be in \[0, 1\)"),
    ("train", "optimizer", "lamb", "'lamb' is not one of"),
    ("model", "norm", "layer", "'layer' is not one of"),
    ("model", "dtype", "float16", "'float16' is not one of"),
  ],
)
def test_bad_value(section, field, value, pattern):
  config = _default()
  config[section][field] = value
  _raises(config, ValueError, pattern)


@pytest.mark.parametrize(
  "edit, pattern",
  [
    ({"data.image_size": 60}, r"image_size=60 must be divisible by 2\*\*\(model.depth - 1\) = 8"),
    (
      {"model.deep_supervision": True, "model.deep_supervision_weights": (1.0,)},
      r"deep_supervision_weights has 1 value\(s\), but a U-Net of depth 4 has 3 outputs",
    ),
    ({"train.seed": 2**40}, r"train.seed must be in \[0, 2\*\*31\)"),
  ],
)
def test_inconsistent_values(edit, pattern):
  config = _default()
  for key, value in edit.items():
    section, field = key.split(".")
    config[section][field] = value
  _raises(config, ValueError, pattern)


@pytest.mark.parametrize(
  "name, options, pattern",
  [
    ("focal", {"gamma": -1.0}, r"config.loss.options .*'focal'.*gamma must be finite and >= 0"),
    # Two classes in binary mode: one sigmoid channel, so one class weight.
    ("dice", {"class_weights": (1.0, 2.0, 3.0)}, r"class_weights must have shape \(1,\)"),
    ("tversky", {"alpha": -0.5}, "alpha"),
  ],
)
def test_bad_loss_option_values_are_caught_before_training(name, options, pattern):
  # validate() checks the option names; the values are checked by tracing the loss (no data
  # built, nothing compiled), which the trainer does before initialising the model.
  from seg_jax.training import config as train_config

  config = _default()
  config.loss.name = name
  config.loss.options = ml_collections.ConfigDict(options)
  train_config.validate(config)
  with pytest.raises((ValueError, TypeError), match=pattern):
    train_config.check_loss_options(config, num_classes=2)


def test_default_cpu_device_count_divides_the_batch():
  from seg_jax.training import devices

  assert devices.cpu_device_count(-1, (16, 0), cores=2) == 2
  assert devices.cpu_device_count(-1, (16, 16), cores=6) == 4
  assert devices.cpu_device_count(-1, (16, 24), cores=64) == 8
  assert devices.cpu_device_count(-1, (15,), cores=4) == 3
  assert devices.cpu_device_count(3, (16,), cores=4) == 3  # Asked for: as given.
  assert devices.cpu_device_count(0, (16,), cores=4) is None  # JAX's default.
  assert 1 <= devices.available_cores()


def test_batch_not_divisible_by_devices(tmp_path):
  from seg_jax import train

  config = load_config("runlocal")
  config.train.batch_size = 12  # 8 test devices
  with pytest.raises(
    ValueError, match=r"batch_size=12 must be a multiple of the number of devices"
  ):
    train.train_and_evaluate(config, str(tmp_path))


# ml_collections' config_flags loads config files with the deprecated importlib load_module().
LOAD_MODULE = "ignore:the load_module\\(\\) method is deprecated:DeprecationWarning"


@pytest.mark.filterwarnings(LOAD_MODULE)
@pytest.mark.parametrize(
  "flag, pattern",
  [("--config.train.stepz=5", "stepz"), ("--config.train.steps=abc", "steps")],
)
def test_command_line_rejects_bad_override(flag, pattern):
  """A misspelt or mistyped override (launch.py's --config flag) fails while parsing."""
  argv = ["launch.py", f"--config={CONFIGS / 'runlocal.py'}", flag]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=fv, lock_config=True, sys_argv=argv)
  with pytest.raises((flags.Error, AttributeError), match=pattern):
    fv(argv)


@pytest.mark.filterwarnings(LOAD_MODULE)
def test_command_line_override_applies():
  argv = ["launch.py", f"--config={CONFIGS / 'focal.py'}", "--config.loss.options.gamma=3.5"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=fv, lock_config=True, sys_argv=argv)
  fv(argv)
  assert fv.config.loss.options.gamma == 3.5
  train_config.validate(fv.config)
