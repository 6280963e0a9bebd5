"""docs/reliability.md is the table tests/reliability_table.py builds from the tests."""

from pathlib import Path

import reliability_table

DOC = Path(__file__).parents[1] / "docs" / "reliability.md"


def test_the_reliability_page_matches_the_tests_that_check_it():
    assert DOC.read_text() == reliability_table.table(), (
        "docs/reliability.md is out of date: run "
        "`python tests/reliability_table.py > docs/reliability.md`"
    )
