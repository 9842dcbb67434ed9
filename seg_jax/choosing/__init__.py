"""Choosing a loss on evidence: the sweep, its statistics, the report and the figures.

* :mod:`seg_jax.choosing.run`: trains every loss with every seed and scores every validation
  image (``python -m seg_jax.compare`` is its command line).
* :mod:`seg_jax.choosing.evaluation`: per-image metrics and the threshold-free view.
* :mod:`seg_jax.choosing.stats`: bootstrap intervals, paired tests, Holm's correction.
* :mod:`seg_jax.choosing.verdict`: flags of each run, ranking, ties, the verdict in words.
* :mod:`seg_jax.choosing.report`, :mod:`seg_jax.choosing.plots`: ``report.md`` and figures.
"""
