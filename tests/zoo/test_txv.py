"""TorchXRayVision files imported safely: outputs, pathologies, op_threshs, and refused payloads."""

from __future__ import annotations

import builtins
import math
import os
import pickle
import sys
from collections import OrderedDict

import pytest
import torch

from medzoo.zoo.safe_pickle import UnsafePickleError, load_restricted
from medzoo.zoo.txv import TXV_WEIGHTS, from_torchxrayvision, read_torchxrayvision, txv_calibrate, txv_outputs
from tests.zoo import txv_standin
from tests.zoo.resnet2d_reference import randomised as randomised_resnet

pytestmark = pytest.mark.filterwarnings("ignore:Couldn.t retrieve source code:UserWarning")  # legacy torch.save
NAN = float("nan")
# a CheXpert-style output layout: unnamed outputs and one named output without an operating point (NaN)
NAMES = ("Atelectasis", "Consolidation", "", "Pneumothorax", "Edema", "", "", "Effusion", "Pneumonia", "",
         "Cardiomegaly", "", "", "", "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum")
OPS = (0.19, 0.05, NAN, 0.05, 0.14, NAN, NAN, 0.27, 0.07, NAN, 0.2, NAN, NAN, NAN, 0.1, NAN, 0.33, 0.11)
KEPT = [i for i, (n, t) in enumerate(zip(NAMES, OPS)) if n and not math.isnan(t)]


class _NoTXVImport:
    """A meta-path finder that fails the test if anything imports torchxrayvision while it is installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torchxrayvision":
            raise AssertionError(f"medzoo imported {name}")
        return None


@pytest.fixture
def no_txv_import():
    finder = _NoTXVImport()
    sys.meta_path.insert(0, finder)
    yield
    sys.meta_path.remove(finder)


def _save_densenet(path, legacy: bool, extra=None):
    """Pickle a whole stand-in DenseNet under torchxrayvision.models; returns it (the reference) afterwards."""
    with txv_standin.installed():
        model = txv_standin.randomise(txv_standin.DenseNet(pathologies=NAMES, op_threshs=torch.tensor(OPS)), seed=7)
        if extra is not None:
            model.payload = extra
        torch.save(model, path, _use_new_zipfile_serialization=not legacy)
    assert "torchxrayvision" not in sys.modules
    return model


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_pickled_txv_densenet_imports_with_its_outputs(tmp_path, legacy, no_txv_import):
    path = tmp_path / "densenet.pt"
    ref = _save_densenet(path, legacy)
    w = read_torchxrayvision(path)
    assert w.class_name == "torchxrayvision.models.DenseNet"
    assert w.pathologies == NAMES
    assert w.op_threshs == pytest.approx(OPS, nan_ok=True)
    model = from_torchxrayvision(path)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        expected = ref(x)[:, KEPT]
    torch.testing.assert_close(txv_outputs(model, x), expected, rtol=1e-5, atol=1e-6)
    head = model.heads["findings"]
    assert list(head.label_names) == [NAMES[i] for i in KEPT]
    assert head.thresholds.tolist() == pytest.approx([OPS[i] for i in KEPT])
    pred = model.predict(x)["findings"]["pred"]
    assert torch.equal(pred, (expected >= 0.5).long())
    assert "torchxrayvision" not in sys.modules


def test_load_report_accounts_for_every_key(tmp_path):
    path = tmp_path / "densenet.pt"
    ref = _save_densenet(path, legacy=False)
    model = from_torchxrayvision(path)
    report = model.load_report
    assert report.ok
    encoder_keys = {f"encoder.{k}" for k in model.encoder.state_dict()}
    assert set(report.loaded) == encoder_keys
    assert report.adapted["heads.findings.fc.weight"].startswith(f"rows {KEPT} of TXV's classifier.weight")
    dropped = report.ignored["classifier.weight/bias rows"]
    assert "Fracture (15)" in dropped
    assert "(unnamed) (2)" in dropped
    assert len(ref.state_dict()) == len(encoder_keys) + 3  # + classifier.weight, classifier.bias, op_threshs


class _Payload:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("kind", ["os.system", "builtins.exec"])
def test_a_file_with_a_payload_is_refused_and_the_payload_never_runs(tmp_path, legacy, kind):
    marker = tmp_path / "pwned"
    payload = (_Payload(os.system, f"touch {marker}") if kind == "os.system"
               else _Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"))
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(payload.func, payload.arg.replace(str(marker), str(control)))))
    assert control.exists(), "the payload is live: plain unpickling runs it"
    path = tmp_path / "evil.pt"
    _save_densenet(path, legacy, extra=payload)
    module = f"(?:{payload.func.__module__}|__builtin__)"  # protocol 2 names builtins the Python 2 way
    with pytest.raises(UnsafePickleError, match=rf"global '{module}\.{payload.func.__name__}'"):
        read_torchxrayvision(path)
    assert not marker.exists()


def test_unknown_module_class_is_refused(tmp_path):
    path = tmp_path / "gru.pt"
    torch.save(torch.nn.GRU(2, 2), path)
    with pytest.raises(UnsafePickleError, match="torch.nn.modules.rnn.GRU"):
        load_restricted(path)


def test_txv_resnet50_state_dict_through_inflation(tmp_path):
    """TXV's ResNet-50 file is a torchvision ResNet-50 state dict with a 1-channel stem and 18 outputs."""
    ref = randomised_resnet(50, seed=11, widths=(8, 16, 32, 64), in_channels=1, num_classes=18)
    path = tmp_path / "pc-nih-rsna-siim-vin-resnet50-test512-e400-state.pt"
    torch.save(ref.state_dict(), path)
    w = read_torchxrayvision(path)  # labels and op_threshs come from TXV's table, found by the file name
    entry = TXV_WEIGHTS["resnet50-res512-all"]
    assert w.pathologies == entry["labels"]
    assert w.resolution == 512
    model = from_torchxrayvision(w)
    x = torch.randn(2, 1, 32, 32)
    ops = torch.tensor(entry["op_threshs"])
    with torch.no_grad():
        expected = txv_standin.op_norm(torch.sigmoid(ref.logits(x)), ops)
    kept = [i for i, t in enumerate(entry["op_threshs"]) if not math.isnan(t)]
    torch.testing.assert_close(txv_outputs(model, x), expected[:, kept], rtol=1e-5, atol=1e-6)
    assert model.load_report.inflation == "centre"
    assert "Lung Lesion" not in model.heads["findings"].label_names  # TXV gives it no operating point


def test_table_matches_torchxrayvision_source():
    """Spot checks typed from torchxrayvision/models.py (model_urls)."""
    assert TXV_WEIGHTS["densenet121-res224-all"]["op_threshs"][:3] == (0.07422872, 0.038290843, 0.09814756)
    assert TXV_WEIGHTS["densenet121-res224-rsna"]["labels"][8] == "Pneumonia"
    assert TXV_WEIGHTS["densenet121-res224-rsna"]["labels"][16] == "Lung Opacity"
    assert TXV_WEIGHTS["densenet121-res224-pc"]["labels"][15] == "Fracture"
    assert TXV_WEIGHTS["densenet121-res224-rsna"]["file"] == (
        "kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt")
    assert all(len(e["labels"]) == len(e["op_threshs"]) == 18 for e in TXV_WEIGHTS.values())


def test_calibration_maps_threshold_to_one_half_and_is_monotone():
    t = torch.tensor([0.2, 0.7])
    p = torch.tensor([[0.0, 0.0], [0.2, 0.7], [0.1, 0.35], [0.6, 0.85], [1.0, 1.0]])
    out = txv_calibrate(p, t)
    assert out[:, 0].tolist() == pytest.approx([0.0, 0.5, 0.25, 0.75, 1.0])
    assert out[:, 1].tolist() == pytest.approx([0.0, 0.5, 0.25, 0.75, 1.0])


def test_file_without_names_needs_the_weights_name(tmp_path):
    path = tmp_path / "densenet.pt"
    with txv_standin.installed():
        torch.save(txv_standin.DenseNet(), path)
    with pytest.raises(ValueError, match="names no pathologies; pass weights="):
        read_torchxrayvision(path)
    with pytest.raises(ValueError, match="unknown TorchXRayVision weights"):
        read_torchxrayvision(path, weights="densenet121-res224-everything")
    w = read_torchxrayvision(path, weights="densenet121-res224-nih")
    assert w.labels == list(TXV_WEIGHTS["densenet121-res224-nih"]["labels"][:14])


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(torch.nn.Linear(2, 2), path, _use_new_zipfile_serialization=False)
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        load_restricted(tmp_path / "cut.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(ValueError, match="not a readable torch file"):
        load_restricted(tmp_path / "junk.pt")


class _Overrun:
    """Reduces to torch's tensor rebuild with a size far beyond its 2-element storage."""

    def __reduce__(self):
        storage = torch.ones(2)._typed_storage()
        return torch._utils._rebuild_tensor_v2, (storage, 0, (1000,), (1,), False, OrderedDict())


def test_a_tensor_that_overruns_its_storage_is_refused(tmp_path):
    path = tmp_path / "overrun.pt"
    torch.save({"w": _Overrun()}, path)
    with pytest.raises(UnsafePickleError, match="overruns its storage"):
        load_restricted(path)
