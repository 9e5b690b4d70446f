"""The README is the user's manual: its configuration table must name every setting with its default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from eager.common.config import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
ROWS = {re.sub(r"[`]", "", cells[0]).strip(): re.sub(r"[`]", "", cells[1]).strip()
        for cells in (line.strip("|").split("|") for line in README.splitlines() if line.startswith("| `EAGER_"))}


@pytest.mark.parametrize(("variable", "default", "_"), Settings.table(), ids=lambda value: str(value)[:40])
def test_every_setting_is_in_the_readme_with_its_default(variable: str, default: str, _: str) -> None:
    assert variable in ROWS, f"{variable} is missing from the README's configuration table"
    assert ROWS[variable] == (default or "(none)")


def test_the_readme_names_no_setting_that_does_not_exist() -> None:
    assert set(ROWS) == {variable for variable, _, _ in Settings.table()}
