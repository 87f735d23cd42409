"""The one table renderer: alignment, number formatting and markdown layout."""

from __future__ import annotations

import math

import pytest

from medzoo.utils.tables import format_cell, render


def test_text_columns_align_and_numbers_right_justify():
    out = render(["name", "value"], [["a", 1.5], ["long-name", 10.25]], digits=2).splitlines()
    assert out == ["name       value", "---------  -----", "a           1.50", "long-name  10.25"]


def test_markdown_marks_numeric_columns_right_aligned_and_escapes_pipes():
    out = render(["k", "v"], [["x|y", 2]], style="markdown").splitlines()
    assert out == ["| k | v |", "|---|---:|", "| x/y | 2 |"]


def test_title_line_comes_first():
    assert render(["a"], [["b"]], title="T").splitlines()[0] == "T"


@pytest.mark.parametrize("value, expected", [(float("nan"), "nan"), (math.inf, "nan"), (None, "-"),
                                             (0.123456, "0.1235"), (True, "True"), ("s", "s")])
def test_format_cell(value, expected):
    assert format_cell(value) == expected


def test_ragged_row_is_an_error_naming_the_row():
    with pytest.raises(ValueError, match="row 1 has 1 cells, expected 2"):
        render(["a", "b"], [["x", "y"], ["z"]])


def test_unknown_style_is_an_error():
    with pytest.raises(ValueError, match="unknown table style"):
        render(["a"], [["b"]], style="html")
