"""medzoo: a MedicalNet-style model zoo for medical imaging, built on MONAI."""

from __future__ import annotations

import re
from pathlib import Path

from setuptools import find_packages, setup

_HERE = Path(__file__).parent
_VERSION = re.search(r'__version__ = "([^"]+)"', (_HERE / "medzoo" / "version.py").read_text()).group(1)

INSTALL_REQUIRES = [
    "torch>=2.4,<=2.13.0",
    # The range the test suite passed on (tests/zoo, tests/encoders, tests/models with MONAI 1.5.2 and 1.6.1);
    # constraints.txt pins the exact versions of a tested environment.
    "monai>=1.5.2,<1.7",
    "numpy>=1.24",
    "safetensors>=0.4",
    "pyyaml>=6",
    "tqdm>=4.60",
    "nibabel>=5",
    "pillow>=10",
    "scipy>=1.10",
    "matplotlib>=3.7",
    "tensorboard>=2.14",
]
EXTRAS = {
    "onnx": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.18"],
    "dicom": ["pydicom>=2.4"],
    # `python -m monai.bundle run` / `verify_metadata` on an exported bundle: MONAI's CLI needs fire, the schema
    # check jsonschema.
    "bundle": ["fire>=0.5", "jsonschema>=4"],
}
EXTRAS["dev"] = [
    "pytest>=8",
    "pytest-timeout>=2.2",
    "pytest-xdist>=3.5",
    "hypothesis>=6.100",
    "ruff>=0.4",
    *EXTRAS["onnx"],
    *EXTRAS["dicom"],
    *EXTRAS["bundle"],
]

setup(
    name="medzoo",
    version=_VERSION,
    description=("A MedicalNet-style model zoo for medical imaging: shared 3D ResNet encoders, task heads, "
                 "verified weights."),
    long_description=(_HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["medzoo", "medzoo.*"]),
    include_package_data=True,
    # configs/ and weights/catalog.yaml live at the repository root and reach the package through the links
    # medzoo/configs and medzoo/weights; the wheel carries real copies, read with importlib.resources.
    package_data={"medzoo": ["py.typed", "configs/*/*.yaml", "weights/*.yaml", "zoo/schemas/*"]},
    zip_safe=False,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["medzoo = medzoo.cli.main:main"]},
)
