"""Point every repository link of the series at the repository pyproject.toml names.

The address lives in one place, ``[project.urls] Repository`` in ``pyproject.toml``.
From it this script writes, in every notebook and in the README:

- each notebook's "Open in Colab" badge and its install cell's ``git+`` address;
- beside every relative link to a notebook (which works on GitHub and in
  JupyterLab), a ``([Colab](...))`` link that opens the same notebook in Colab,
  where relative links lead nowhere;
- the README's ``git clone`` line.

On a fork: change ``Repository`` to the fork's address, run ``make links``, commit.
``make links CHECK=1`` (and ``tests/test_links.py``) only reports files that
disagree with ``pyproject.toml``. Notebooks are rewritten as text, so their JSON
layout and cell ids stay as they are.
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BRANCH = "main"
COLAB = "https://colab.research.google.com/github"
PYPROJECT = "pyproject.toml's Repository"


def repository(root: Path = ROOT) -> str:
    """The ``Repository`` address of ``pyproject.toml`` (``https://github.com/o/n``)."""
    pyproject = root / "pyproject.toml"
    match = re.search(r'^Repository = "([^"]+)"', pyproject.read_text(), re.M)
    if not match:
        raise SystemExit(
            f'{pyproject}: no `Repository = "..."` line in [project.urls].'
        )
    address = match[1].rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", address):
        raise SystemExit(
            f"{pyproject}: Repository = {address!r} is not a GitHub repository address "
            "like https://github.com/owner/name (Colab opens notebooks from GitHub)."
        )
    return address


def colab_url(address: str, notebook: str) -> str:
    """The address that opens ``notebooks/<notebook>`` of ``address`` in Colab."""
    github = address.removeprefix("https://github.com/")
    return f"{COLAB}/{github}/blob/{BRANCH}/notebooks/{notebook}"


# A relative link to a notebook, with the Colab link this script put beside it.
_NOTEBOOK_LINK = re.compile(
    r"\]\((?P<folder>notebooks/)?(?P<name>\d\d_[a-z0-9_]+\.ipynb)(?P<anchor>#[^)\s]*)?\)"
    r"(?: \(\[Colab\]\([^)]*\)\))?"
)
_BADGE = re.compile(re.escape(COLAB) + r"/[\w.-]+/[\w.-]+/blob/[\w.-]+/notebooks/")
_INSTALL = re.compile(r"git\+https://github\.com/[\w.-]+/[\w.-]+")
_CLONE = re.compile(r"git clone https://github\.com/[\w.-]+/[\w.-]+?\.git\ncd [\w.-]+")


def rewrite(text: str, address: str) -> str:
    """``text`` with every repository link pointed at ``address``."""
    name = address.rsplit("/", 1)[1]
    github = address.removeprefix("https://github.com/")

    def with_colab(match):
        relative = match[0].split(" ([Colab](")[0]
        return f"{relative} ([Colab]({colab_url(address, match['name'])}))"

    text = _BADGE.sub(f"{COLAB}/{github}/blob/{BRANCH}/notebooks/", text)
    text = _INSTALL.sub(f"git+{address}", text)
    text = _CLONE.sub(f"git clone {address}.git\ncd {name}", text)
    # Badges are links to Colab already; only relative links get a twin.
    return _NOTEBOOK_LINK.sub(with_colab, text)


def files(root: Path = ROOT) -> list[Path]:
    """The files whose links this script keeps: the notebooks and the README."""
    return [
        *sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")),
        root / "README.md",
    ]


def out_of_date(root: Path = ROOT) -> list[Path]:
    """The files whose links disagree with ``pyproject.toml``."""
    address = repository(root)
    return [
        path
        for path in files(root)
        if rewrite(path.read_text(), address) != path.read_text()
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="only list the files that disagree"
    )
    args = parser.parse_args(argv)
    stale = out_of_date()
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)}: links disagree with {PYPROJECT}")
        if stale:
            print("Run `make links` to rewrite them.")
        return 1 if stale else 0
    address = repository()
    for path in stale:
        path.write_text(rewrite(path.read_text(), address))
        print(f"rewrote {path.relative_to(ROOT)}")
    print(f"every link points at {address}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
