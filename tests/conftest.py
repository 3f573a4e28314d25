import sys
from pathlib import Path

import pytest
import torch

# the naive references live beside the tests
sys.path.insert(0, str(Path(__file__).parent))


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA: skipped without it (select them alone with `pytest -m gpu`).
    Every other test runs on the CPU whatever the machine has: the device is always explicit."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marked gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
