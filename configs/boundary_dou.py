r"""boundary_dou: Boundary difference over union loss (Sun et al., MICCAI 2023).

Run it with::

  python launch.py --config=configs/boundary_dou.py

The default experiment (``configs/default.py``) with the loss ``boundary_dou``; its options are
those of ``seg_jax.losses.get("boundary_dou", ...)``, any of which can be overridden, e.g.
``--config.loss.options.max_alpha=...``. Outputs go to ``runs/boundary_dou``.
"""

from configs import default


def get_config():
  """configs/default.py with the boundary_dou loss."""
  config = default.get_config()
  config.loss.name = "boundary_dou"
  # every class, as the authors' loop over classes
  config.loss.options.include_background = True
  config.loss.options.per_image = False
  # cap of the boundary weight alpha (the authors' truncation)
  config.loss.options.max_alpha = 0.8
  return config
