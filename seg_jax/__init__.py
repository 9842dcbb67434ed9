"""seg_jax: segmentation losses for JAX, and a Flax U-Net that trains on any of them.

``seg_jax.losses`` needs only jax, numpy and chex; the training stack (``seg_jax.models``,
``seg_jax.data``, ``seg_jax.training`` with its entry points in ``seg_jax.train``) needs the
``train`` extra.
"""

__version__ = "0.1.0"
