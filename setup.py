"""Package layout that pyproject.toml cannot state: the top-level ``datasets/``
folder ships inside the wheel as ``mixedanova/datasets/data`` (one copy of the
data; the loader in ``mixedanova/datasets/__init__.py`` reads either place).
Everything else is in pyproject.toml."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["mixedanova", "mixedanova.*"]) + ["mixedanova.datasets.data"],
    package_dir={"mixedanova.datasets.data": "datasets"},
    package_data={"mixedanova.datasets.data": ["*.csv", "*.md"], "mixedanova": ["py.typed"]},
)
