"""TorchXRayVision's published weights: file, output names, calibrated operating points, resolution.

Transcribed from ``torchxrayvision/models.py`` (``model_urls``). Output order is TXV's 18 default pathologies; an
empty name marks an output the weights were not trained on, and NaN marks an output without an operating point
(TXV returns the constant 0.5 there). The released DenseNet files store neither names nor thresholds, so the
importer takes them from here.
"""

from __future__ import annotations

__all__ = ["TXV_RELEASE", "TXV_WEIGHTS"]

TXV_RELEASE = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
_N = float("nan")
_ALL = ("Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis", "Effusion",
        "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia", "Lung Lesion", "Fracture",
        "Lung Opacity", "Enlarged Cardiomediastinum")
_CHEX = ("Atelectasis", "Consolidation", "", "Pneumothorax", "Edema", "", "", "Effusion", "Pneumonia", "",
         "Cardiomegaly", "", "", "", "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum")
_SUFFIX = "-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"

TXV_WEIGHTS: dict[str, dict] = {
    "densenet121-res224-all": {
        "file": "nih-pc-chex-mimic_ch-google-openi-kaggle" + _SUFFIX, "resolution": 224, "labels": _ALL,
        "op_threshs": (0.07422872, 0.038290843, 0.09814756, 0.0098118475, 0.023601074, 0.0022490358, 0.010060724,
                       0.103246614, 0.056810737, 0.026791653, 0.050318155, 0.023985857, 0.01939503, 0.042889766,
                       0.053369623, 0.035975814, 0.20204692, 0.05015312)},
    "densenet121-res224-nih": {
        "file": "nih" + _SUFFIX, "resolution": 224, "labels": _ALL[:14] + ("",) * 4,
        "op_threshs": (0.039117552, 0.0034529066, 0.11396341, 0.0057298196, 0.00045666535, 0.0018880932, 0.012037827,
                       0.038744126, 0.0037213727, 0.014730946, 0.016149804, 0.054241467, 0.037198864, 0.0004403434,
                       _N, _N, _N, _N)},
    "densenet121-res224-pc": {
        "file": "pc" + _SUFFIX, "resolution": 224, "labels": _ALL[:14] + ("", "Fracture", "", ""),
        "op_threshs": (0.031012505, 0.013347598, 0.081435576, 0.001262615, 0.002587246, 0.0035944257, 0.0023071,
                       0.055412333, 0.044385884, 0.042766232, 0.043258056, 0.037629247, 0.005658899, 0.0091741895,
                       _N, 0.026507627, _N, _N)},
    "densenet121-res224-chex": {
        "file": "chex" + _SUFFIX, "resolution": 224, "labels": _CHEX,
        "op_threshs": (0.1988969, 0.05710573, _N, 0.0531293, 0.1435217, _N, _N, 0.27212676, 0.07749717, _N,
                       0.19712369, _N, _N, _N, 0.09932402, 0.09273402, 0.3270967, 0.10888247)},
    "densenet121-res224-rsna": {
        "file": "kaggle" + _SUFFIX, "resolution": 224,
        "labels": ("",) * 8 + ("Pneumonia",) + ("",) * 7 + ("Lung Opacity", ""),
        "op_threshs": (_N,) * 8 + (0.13486601,) + (_N,) * 7 + (0.13511065, _N)},
    "densenet121-res224-mimic_nb": {
        "file": "mimic_nb" + _SUFFIX, "resolution": 224, "labels": _CHEX,
        "op_threshs": (0.08558747, 0.011884617, _N, 0.0040595434, 0.010733786, _N, _N, 0.118761964, 0.022924708, _N,
                       0.06358637, _N, _N, _N, 0.022143636, 0.017476924, 0.1258702, 0.014020768)},
    "densenet121-res224-mimic_ch": {
        "file": "mimic_ch" + _SUFFIX, "resolution": 224, "labels": _CHEX,
        "op_threshs": (0.09121389, 0.010573786, _N, 0.005023008, 0.003698257, _N, _N, 0.08001232, 0.037242252, _N,
                       0.05006329, _N, _N, _N, 0.019866971, 0.03823637, 0.11303808, 0.0069147074)},
    "resnet50-res512-all": {
        "file": "pc-nih-rsna-siim-vin-resnet50-test512-e400-state.pt", "resolution": 512, "labels": _ALL,
        "op_threshs": (0.51570356, 0.50444704, 0.53787947, 0.50723547, 0.5025118, 0.5035252, 0.5038076, 0.51862943,
                       0.5078151, 0.50724894, 0.5056339, 0.510706, 0.5053923, 0.5020846, _N, 0.5080557, 0.5138526,
                       _N)},
}
