"""The U-Net trainer, one module per part (read in this order):

* :mod:`~seg_jax.training.config`: every config field, its default and its checks.
* :mod:`~seg_jax.training.devices`: the ``'data'`` mesh and the CPU device count.
* :mod:`~seg_jax.training.state`: ``TrainState``, the model, the optimizer, the initialisation.
* :mod:`~seg_jax.training.steps`: the jitted training and evaluation steps (data parallelism,
  the gradient convention, the checked steps).
* :mod:`~seg_jax.training.loop`: ``train_and_evaluate``: setup, step, loop, evaluation.
* :mod:`~seg_jax.training.seeds`: ``train_seeds_and_evaluate``: several seeds of one config as
  one ``jax.vmap``-ed program, each writing what its own run writes.
* :mod:`~seg_jax.training.checkpoint`: orbax checkpoints (latest and best) and preemption.
* :mod:`~seg_jax.training.outputs`: metrics.jsonl, TensorBoard, config.json, figures, console.

``seg_jax.train`` re-exports the entry points (``train.train_and_evaluate(config, workdir)``).
Nothing is imported here, so that :mod:`seg_jax.training.devices` can be set up before JAX
starts. Imports go down only: training uses ``seg_jax.losses``, ``data``, ``metrics`` and
``models``; none of them uses training.
"""
