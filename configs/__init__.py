"""Training configs for ``launch.py`` (ml_collections files with ``get_config()``).

``default.py`` is the base experiment; one file per registry loss derives from it; ``runlocal.py``
is a tiny variant for tests. Each file's docstring holds the command that runs it.
"""
