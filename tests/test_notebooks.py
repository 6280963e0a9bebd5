"""Notebook lint: the house style that a reader and CI rely on (see STYLE.md)."""

import importlib
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# The one home of the repository's address: pyproject.toml, read by tools/links.py.
sys.path.insert(0, str(ROOT / "tools"))
REPOSITORY = importlib.import_module("links").repository(ROOT)
GITHUB = REPOSITORY.removeprefix("https://github.com/")


def _read(path):
    return nbformat.read(path, as_version=4)


def _source(cell):
    return cell.source if isinstance(cell.source, str) else "".join(cell.source)


def test_the_series_has_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    for cell in _read(path).cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, _source(cell)[
                :80
            ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_markdown_latex_has_single_backslashes(path):
    """``\\approx`` in a markdown cell renders as a line break and "approx", not
    as the symbol: LaTeX commands take one backslash."""
    for cell in _read(path).cells:
        if cell.cell_type == "markdown":
            found = re.search(r"\\\\[A-Za-z]+", _source(cell))
            assert not found, f"{found.group()} in: {_source(cell)[:80]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_data_is_split_with_the_series_one_seed(path):
    """A notebook that passed its own seed would split differently from the others,
    and notebook 06 would score models on images they trained on."""
    for cell in _read(path).cells:
        calls = re.findall(
            r"data\.(?:with_validation_split|stratified_subset)\([^)]*\)",
            _source(cell),
            flags=re.S,
        )
        for call in calls:
            assert "seed=" not in call, call


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_cell_has_its_own_id(path):
    """nbformat 4.5 cells carry an id; a cell added without one is a validation
    warning today and, nbformat says, an error in future versions."""
    import json

    cells = json.loads(path.read_text())["cells"]
    ids = [cell.get("id") for cell in cells]
    assert None not in ids, "a cell has no id: add one (8 hex digits)"
    assert len(set(ids)) == len(ids), "two cells share an id"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_its_numbered_title(path):
    first = _read(path).cells[0]
    assert first.cell_type == "markdown"
    assert re.match(rf"# {path.name[:2]} · \S", _source(first)), _source(first)[:80]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_badge_points_at_this_notebook_in_the_repository(path):
    first = _source(_read(path).cells[0])
    badges = re.findall(
        r"\[!\[Open In Colab\]\([^)]*\)\]"
        r"\(https://colab\.research\.google\.com/github/([^)]+)\)",
        first,
    )
    assert badges == [f"{GITHUB}/blob/main/notebooks/{path.name}"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_exactly_one_parameters_cell(path):
    tagged = [
        cell
        for cell in _read(path).cells
        if "parameters" in cell.get("metadata", {}).get("tags", [])
    ]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    assert "SMOKE" in _source(tagged[0])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_setup_installs_the_helpers_before_importing_them(path):
    sources = [_source(c) for c in _read(path).cells if c.cell_type == "code"]
    install = next(i for i, s in enumerate(sources) if "%pip install" in s)
    first_import = next(i for i, s in enumerate(sources) if "cifar_helpers" in s)
    assert install < first_import
    command = sources[install]
    assert '"google.colab" in sys.modules' in command
    assert f"git+{REPOSITORY}" in command
    assert " -U" not in command and "--upgrade" not in command
    line = next(ln for ln in command.splitlines() if "%pip install" in ln)
    words = line.split("install", 1)[1].replace('"', " ").split()
    packages = [w for w in words if w[0] not in "-@" and not w.startswith("git+")]
    assert packages == ["cifar-helpers"], "Colab's TensorFlow, Keras, NumPy stay"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_kernelspec_is_python3(path):
    assert _read(path).metadata["kernelspec"]["name"] == "python3"


def _parameters(path):
    cell = next(
        c
        for c in _read(path).cells
        if "parameters" in c.get("metadata", {}).get("tags", [])
    )
    return _source(cell)


def test_a_notebooks_smoke_model_is_the_catalogues_narrow_copy():
    # A notebook that builds a model of the catalogue takes its smoke sizes from
    # models.CATALOGUE, so a smoke run builds what `train --smoke` builds.
    sized = {
        path.name: _parameters(path)
        for path in NOTEBOOKS
        if re.search(r"^\w*(FILTERS|WIDTHS) = ", _parameters(path), re.M)
    }
    assert len(sized) == 4, sorted(sized)  # notebooks 02, 04, 05 and 06
    for name, source in sized.items():
        assert re.search(r'models\.spec\("\w+"\)', source), name
