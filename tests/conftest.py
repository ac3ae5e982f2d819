"""Shared test setup: the Keras backend comes from KERAS_BACKEND (default tensorflow).

Tests marked `backend_agnostic` (data, tools, recipes, cross-backend checks that spawn
their own processes) run only in the TensorFlow-backend pass of `tests/run_backends.py`.
Files with a test marked `slow` are collected first.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()


def pytest_report_header(config):
    return f"keras backend: {BACKEND} (keras {keras.__version__})"


def pytest_collection_modifyitems(config, items):
    # Files with a `slow` test first: pytest-xdist hands out whole files in this order, so
    # the longest ones start early instead of leaving one worker busy alone at the end.
    slow_files = {item.path for item in items if "slow" in item.keywords}
    items.sort(key=lambda item: item.path not in slow_files)
    if BACKEND == "tensorflow":
        return
    skip = pytest.mark.skip(reason="backend-agnostic test: runs in the tensorflow pass only")
    for item in items:
        if "backend_agnostic" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield
