"""The notebooks run top to bottom, produce their figures, and every figure is labelled.

Each notebook is executed with nbclient in a fresh ``python3`` kernel of this interpreter, from
``notebooks/``, with its ``parameters`` cell replaced (``SMALL = True``; data and run directories
in ``tmp_path`` so nothing is written to ``~``). Two cells are added around the notebook's own:

* after the parameters, a cell that wraps IPython's PNG formatter for matplotlib figures: every
  figure shown is checked (axes with visible axis lines need an x label, a y label and a title
  or figure title; image axes need a title; axes with two or more labelled artists need a
  legend), problems are collected;
* at the end, a cell that fails if any problem was collected.

The notebooks are stored without outputs (checked by a fast test).
"""

import os
import pathlib
import sys
import time

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT_S = 600

# Figures (matplotlib) and PNG images each notebook shows with SMALL = True.
EXPECTED = {
  # pixel losses, dice per pixel, examples, metrics, inspect histogram + compare's predictions.png
  "choosing_a_loss.ipynb": {"figures": 5, "png_outputs": 6},
  # training loss + predictions
  "losses_in_your_code.ipynb": {"figures": 1, "png_outputs": 1},
}

FIGURE_CHECK = r"""
from IPython import get_ipython as _get_ipython
from matplotlib.figure import Figure as _Figure

# Activate the inline backend now (as the first figure would), so that its PNG formatter exists.
_get_ipython().run_line_magic("matplotlib", "inline")
_FIGURE_PROBLEMS, _FIGURES_CHECKED = [], [0]
_png = _get_ipython().display_formatter.formatters["image/png"]
_original_png = _png.lookup_by_type(_Figure)


def _check_figure(fig):
  _FIGURES_CHECKED[0] += 1
  where = f"figure {_FIGURES_CHECKED[0]}"
  suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
  for i, ax in enumerate(fig.axes):
    if not ax.get_visible() or ax.get_label() == "<colorbar>":
      continue
    name = f"{where}, axes {i} ({ax.get_title() or suptitle or 'untitled'})"
    if not (ax.get_title() or suptitle):
      _FIGURE_PROBLEMS.append(f"{name}: no title")
    if ax.axison and not ax.images:
      # With a shared x axis (subplots(sharex=True)) one label per column is enough.
      if not any(a.get_xlabel() for a in ax.get_shared_x_axes().get_siblings(ax)):
        _FIGURE_PROBLEMS.append(f"{name}: no x label")
      if not ax.get_ylabel():
        _FIGURE_PROBLEMS.append(f"{name}: no y label")
    labelled = [t for t in ax.get_legend_handles_labels()[1] if not t.startswith("_")]
    if len(labelled) >= 2 and ax.get_legend() is None and not fig.legends:
      _FIGURE_PROBLEMS.append(f"{name}: {len(labelled)} labelled artists but no legend")


def _checked_png(fig, *args, **kwargs):
  _check_figure(fig)
  return _original_png(fig, *args, **kwargs)


_png.for_type(_Figure, _checked_png)
"""

FIGURE_ASSERT = r"""
print(f"figures checked: {_FIGURES_CHECKED[0]}")
assert not _FIGURE_PROBLEMS, "unlabelled figures:\n" + "\n".join(_FIGURE_PROBLEMS)
"""


def _load(name: str | pathlib.Path) -> nbformat.NotebookNode:
  return nbformat.read(NOTEBOOKS / name, as_version=4)  # an absolute path stays as it is


def _parameters_index(nb) -> int:
  tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
  assert len(tagged) == 1, f"expected exactly one cell tagged 'parameters', found {len(tagged)}"
  return tagged[0]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_is_stored_clean(name):
  """Stored without outputs, with one code cell tagged 'parameters' that sets SMALL."""
  nb = _load(name)
  nbformat.validate(nb)
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == "code":
      assert not cell.outputs, f"{name}: cell {i} has stored outputs"
      assert cell.execution_count is None, f"{name}: cell {i} has an execution count"
  params = nb.cells[_parameters_index(nb)]
  assert params.cell_type == "code"
  assert "SMALL = True" in params.source


def _run(name: str | pathlib.Path, parameters: str) -> tuple[nbformat.NotebookNode, float]:
  from nbclient import NotebookClient

  nb = _load(name)
  i = _parameters_index(nb)
  nb.cells[i].source = parameters
  nb.cells.insert(i + 1, nbformat.v4.new_code_cell(FIGURE_CHECK))
  nb.cells.append(nbformat.v4.new_code_cell(FIGURE_ASSERT))
  client = NotebookClient(
    nb,
    kernel_name="python3",  # jupyter_client runs a "python" kernelspec with sys.executable
    timeout=CELL_TIMEOUT_S,
    resources={"metadata": {"path": str(NOTEBOOKS)}},
  )
  tic = time.perf_counter()
  client.execute()  # raises CellExecutionError on the first failing cell
  return nb, time.perf_counter() - tic


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
  """The kernel inherits this environment: its profile and connection files go to tmp_path."""
  monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
  monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter_runtime"))
  monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", "cpu"))
  return monkeypatch


def _outputs(nb, output_type=None):
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      if output_type is None or out.output_type == output_type:
        yield out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs(name, tmp_path, kernel_env):
  data_dir, work_dir = tmp_path / "tfds", tmp_path / "runs"
  # Nothing may fall back to ~/tensorflow_datasets.
  kernel_env.setenv("TFDS_DATA_DIR", str(data_dir))
  parameters = f"SMALL = True\nDATA_DIR = {str(data_dir)!r}\nWORK_DIR = {str(work_dir)!r}\n"
  nb, seconds = _run(name, parameters)
  print(f"{name}: executed in {seconds:.1f} s", file=sys.stderr)

  errors = list(_outputs(nb, "error"))
  assert not errors, [f"{e.ename}: {e.evalue}" for e in errors]
  pngs = [o for o in _outputs(nb) if "image/png" in o.get("data", {})]
  assert len(pngs) == EXPECTED[name]["png_outputs"], len(pngs)
  last = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
  assert f"figures checked: {EXPECTED[name]['figures']}" in last, last
  if name == "choosing_a_loss.ipynb":
    # The comparison wrote its runs (and the synthetic data) where it was told to.
    assert any(data_dir.rglob("*.array_record*")), "no synthetic data built in DATA_DIR"
    for kind in ("balanced", "imbalanced"):
      assert (work_dir / kind / "report.md").is_file(), kind
      for loss in ("cross_entropy", "focal", "dice"):
        for seed in (0, 1):  # Two seeds per loss in SMALL mode.
          assert (work_dir / kind / loss / f"seed{seed}" / "metrics.jsonl").is_file(), (kind, loss)


@pytest.mark.slow
def test_figure_check_catches_unlabelled_figures(tmp_path, kernel_env):
  """The injected check fails a notebook whose figure lacks axis labels and a legend."""
  from nbclient.exceptions import CellExecutionError

  nb = nbformat.v4.new_notebook()
  params = nbformat.v4.new_code_cell("SMALL = True")
  params.metadata["tags"] = ["parameters"]
  plot = (
    "import matplotlib.pyplot as plt\n"
    "fig, ax = plt.subplots()\n"
    "ax.plot([0, 1], label='a')\n"
    "ax.plot([1, 0], label='b')\n"
    "ax.set_title('unlabelled axes')\n"
    "plt.show()"
  )
  nb.cells = [params, nbformat.v4.new_code_cell(plot)]
  path = tmp_path / "unlabelled.ipynb"
  nbformat.write(nb, path)
  with pytest.raises(CellExecutionError) as err:
    _run(path, "SMALL = True\n")
  message = str(err.value)
  for problem in ("no x label", "no y label", "2 labelled artists but no legend"):
    assert problem in message, message


def test_stored_notebooks_are_what_build_notebooks_writes(tmp_path):
  # The notebooks are generated: an edit of the .ipynb alone (or of the script alone) would be
  # lost or unreviewed at the next build.
  import subprocess
  import sys

  script = NOTEBOOKS / "build_notebooks.py"
  subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True)
  for name in EXPECTED:
    built = (tmp_path / "notebooks" / name).read_text()
    assert built == (NOTEBOOKS / name).read_text(), (
      f"notebooks/{name} differs from what notebooks/build_notebooks.py writes; run it."
    )
