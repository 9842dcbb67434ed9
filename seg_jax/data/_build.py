"""Building tfds data sets once per data directory, also with several JAX processes."""

from __future__ import annotations

from collections.abc import Callable

import jax
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils


def prepared_builder(make_builder: Callable[[], tfds.core.DatasetBuilder], **prepare_kwargs):
  """Returns ``make_builder()`` after ``download_and_prepare`` (ArrayRecord) has run for it.

  With several JAX processes, process 0 builds first while the others wait at a barrier; the
  others then build only if the data is still missing (each host has its own disk). A builder
  made before its data existed has no split metadata, so the builder is made anew afterwards.
  """
  prepare_kwargs = {"file_format": "array_record", **prepare_kwargs}
  builder = make_builder()
  if jax.process_count() == 1:
    builder.download_and_prepare(**prepare_kwargs)
    return builder
  if jax.process_index() == 0:
    builder.download_and_prepare(**prepare_kwargs)
  multihost_utils.sync_global_devices(f"seg_jax.data: {builder.info.full_name} built")
  builder = make_builder()
  builder.download_and_prepare(**prepare_kwargs)  # No-op where process 0's copy is visible.
  return make_builder()
