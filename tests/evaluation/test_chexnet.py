"""The one CheXNet formatter: the published columns when the rows carry them, the plain AUROC (95% CI) otherwise."""

from __future__ import annotations

import json
import math

import pytest

from medzoo.evaluation.chexnet import PUBLISHED_CHEXNET, PUBLISHED_WANG2017, format_chexnet_table, is_synthetic_corpus

ROWS = [
    {"label": "Pleural_Thickening", "auroc": 0.71234, "ci_lower": 0.6, "ci_upper": 0.8, "n_pos": 3, "n_neg": 17,
     "chexnet": PUBLISHED_CHEXNET["Pleural_Thickening"], "wang2017": PUBLISHED_WANG2017["Pleural_Thickening"]},
    {"label": "Mean", "auroc": 0.7, "ci_lower": math.nan, "ci_upper": 0.9, "n_pos": 3, "n_neg": 17,
     "chexnet": PUBLISHED_CHEXNET["Mean"], "wang2017": PUBLISHED_WANG2017["Mean"]},
]


def test_published_columns_and_cells():
    lines = format_chexnet_table(ROWS, synthetic=False).splitlines()
    assert lines[0] == ("| Pathology | AUROC (95% CI) | n+ / n- | CheXNet 2017 (published; their split) | "
                        "Wang et al. 2017 (published; their split) |")
    assert lines[2] == "| Pleural Thickening | 0.712 (0.600-0.800) | 3 / 17 | 0.8062 | 0.708 |"
    assert lines[3] == "| Mean | 0.700 (nan-0.900) | 3 / 17 | 0.841 | 0.738 |"
    assert lines[-1].startswith("Published columns: CheXNet (arXiv 1711.05225)")


def test_synthetic_corpus_labels_the_published_columns_as_other_data():
    text = format_chexnet_table(ROWS, synthetic=True)
    assert "CheXNet 2017 (published, different data)" in text.splitlines()[0]
    assert "not comparable" in text.splitlines()[-1]


def test_rows_without_published_values_give_the_two_column_layout():
    rows = [{k: v for k, v in r.items() if k not in ("chexnet", "wang2017")} for r in ROWS]
    lines = format_chexnet_table(rows).splitlines()
    assert lines[0] == "| Pathology | AUROC (95% CI) |"
    assert lines[2] == "| Pleural_Thickening | 0.712 (0.600-0.800) |"
    assert len(lines) == 4


@pytest.mark.parametrize("content, expected", [
    ({"format": "medzoo-synthetic-corpus"}, True), ({"format": "other"}, False), (None, False)])
def test_is_synthetic_corpus_reads_the_marker(tmp_path, content, expected):
    if content is not None:
        (tmp_path / "corpus.json").write_text(json.dumps(content))
    assert is_synthetic_corpus(tmp_path) is expected
