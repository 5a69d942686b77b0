"""Shared pytest configuration.

Tests marked ``@pytest.mark.cuda`` run only where ``torch.cuda.is_available()``; elsewhere
they are skipped with a reason (CI has no GPU).
"""
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def cuda_device():
    return torch.device("cuda")
