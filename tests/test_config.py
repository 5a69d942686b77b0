"""gencore.config: device choice, seeding, the quick/full scale setting."""
import random

import numpy as np
import pytest
import torch

import gencore
from gencore.config import SCALE_ENV


def test_device_is_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert gencore.device() == torch.device("cpu")


def test_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gencore.device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gencore.device() == torch.device("cuda")


def test_seed_everything_repeats_python_numpy_and_torch_draws():
    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    gencore.seed_everything(123)
    first = draws()
    gencore.seed_everything(123)
    assert draws() == first
    gencore.seed_everything(124)
    assert draws() != first


@pytest.mark.parametrize("bad", [-1, 1.5, "0"])
def test_seed_everything_rejects_bad_seed(bad):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        gencore.seed_everything(bad)


def test_scale_default_follows_cuda(monkeypatch):
    monkeypatch.delenv(SCALE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gencore.scale() == "quick"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gencore.scale() == "full"


def test_scale_env_overrides_and_by_scale_picks(monkeypatch):
    monkeypatch.setenv(SCALE_ENV, "full")
    assert gencore.scale() == "full"
    assert gencore.by_scale(quick=1, full=2) == 2
    monkeypatch.setenv(SCALE_ENV, " Quick ")
    assert gencore.by_scale(quick=1, full=2) == 1


def test_wrong_scale_value_lists_the_choices(monkeypatch):
    monkeypatch.setenv(SCALE_ENV, "medium")
    with pytest.raises(ValueError, match="GENCORE_SCALE must be one of quick, full; got 'medium'"):
        gencore.scale()
