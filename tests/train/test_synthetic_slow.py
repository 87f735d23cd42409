"""On the small synthetic corpus, the tiny multi-task model (CT segmentation + COVIDx-CT series + CXR multilabel)
trains on 2 CPU threads in under 5 minutes and every task beats chance clearly (tools/train_synthetic.py)."""

from __future__ import annotations

import pytest

from tools.train_synthetic import run


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_task_beats_chance(tmp_path):
    figs = run(None, tmp_path, threads=2)
    m, chance = figs["result"].metrics, figs["chance"]
    assert m["test/ct_seg/dice/lung"] > chance["ct_seg/dice/lung"] + 0.3
    assert m["test/covid_ct/auroc"] > 0.7
    assert m["test/covid_ct/accuracy"] > chance["covid_ct/accuracy"] + 0.1
    assert m["test/findings/mean_auroc"] > 0.65
    # wall time on 2 threads; a machine shared with other work can exceed it (cpu_s shows the work done)
    assert figs["train_s"] < 300, f"training took {figs['train_s']:.0f} s wall, {figs['cpu_s']:.0f} s CPU"
