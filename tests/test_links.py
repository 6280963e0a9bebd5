"""The repository's address has one home, pyproject.toml's Repository: every Colab
badge, install cell, Colab link beside a relative notebook link, and the README's
clone line agree with it (tools/links.py writes them; `make links` on a fork)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import links  # noqa: E402

FORK = "https://github.com/someone/my-fork"


def test_every_link_agrees_with_pyproject():
    assert links.out_of_date() == [], "run `make links`"


def test_every_relative_notebook_link_has_a_colab_twin():
    address = links.repository()
    for path in links.files():
        text = path.read_text()
        for match in links._NOTEBOOK_LINK.finditer(text):
            assert f"([Colab]({links.colab_url(address, match['name'])}))" in match[0]


def test_a_fork_gets_every_link_rewritten_and_nothing_else():
    text = (
        "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        "(https://colab.research.google.com/github/a/b/blob/main/notebooks/01_x.ipynb)\n"
        '%pip install -q \\"cifar-helpers @ git+https://github.com/a/b\\"\n'
        "See [02 · CNN](02_baseline_cnn.ipynb#the-loop) and "
        "[the README](../README.md).\n"
        "git clone https://github.com/a/b.git\ncd b\n"
    )
    forked = links.rewrite(text, FORK)
    colab = "https://colab.research.google.com/github/someone/my-fork/blob/main"
    assert f"({colab}/notebooks/01_x.ipynb)" in forked
    assert "git+https://github.com/someone/my-fork\\" in forked
    assert (
        f"[02 · CNN](02_baseline_cnn.ipynb#the-loop) "
        f"([Colab]({colab}/notebooks/02_baseline_cnn.ipynb))" in forked
    )
    assert "[the README](../README.md).\n" in forked
    assert "git clone https://github.com/someone/my-fork.git\ncd my-fork\n" in forked
    assert "github.com/a/b" not in forked
    # Idempotent: a second pass changes nothing, and the original comes back.
    assert links.rewrite(forked, FORK) == forked
    back = links.rewrite(forked, "https://github.com/a/b")
    assert back == links.rewrite(text, "https://github.com/a/b")


def test_an_address_that_is_not_github_is_refused(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project.urls]\nRepository = "https://gitlab.com/a/b"\n'
    )
    try:
        links.repository(tmp_path)
    except SystemExit as refusal:
        assert "not a GitHub repository address" in str(refusal)
    else:
        raise AssertionError("a GitLab address was accepted")
