"""gencore.checks: the helper that turns a sentence of the book into an assertion."""
import math

import numpy as np
import pytest
import torch

from gencore import ClaimError, check_close, check_that


def test_check_close_passes_and_prints_one_stable_line(capsys):
    err = check_close("D* matches p/(p+q)", torch.tensor([0.5, 0.25]), np.array([0.5, 0.26]), 0.02)
    assert err == pytest.approx(0.01)
    assert capsys.readouterr().out == "check passed: D* matches p/(p+q) (max error < 0.02)\n"


def test_check_close_fails_with_the_measured_error():
    with pytest.raises(ClaimError, match=r"claim failed: x is one: max error 0\.5 is not < 0\.1"):
        check_close("x is one", 1.5, 1.0, 0.1)


def test_check_close_relative_error(capsys):
    check_close("big numbers agree", 1000.5, 1000.0, 1e-3, relative=True)
    assert "max relative error < 0.001" in capsys.readouterr().out
    with pytest.raises(ClaimError):
        check_close("big numbers agree", 1010.0, 1000.0, 1e-3, relative=True)


def test_check_close_infinities_must_match():
    check_close("KL is infinite", [math.inf, 1.0], [math.inf, 1.0], 1e-9)
    with pytest.raises(ClaimError, match="infinite entries"):
        check_close("KL is infinite", [1e9], [math.inf], 1e-9)
    with pytest.raises(ClaimError, match="NaN"):
        check_close("no nan", [math.nan], [0.0], 1.0)


@pytest.mark.parametrize("tol", [0, -1, math.inf, "0.1"])
def test_check_close_rejects_bad_tolerance(tol):
    with pytest.raises(ValueError, match="tol must be a positive finite number"):
        check_close("c", 1.0, 1.0, tol)


def test_check_close_rejects_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match="do not broadcast"):
        check_close("c", np.zeros(3), np.zeros(4), 0.1)


def test_check_that(capsys):
    check_that("the bound is below the evidence", torch.tensor([1.0, 2.0]) <= torch.tensor([1.0, 3.0]))
    assert capsys.readouterr().out == "check passed: the bound is below the evidence\n"
    with pytest.raises(ClaimError, match=r"claim failed: monotone \(values 3, 2\)"):
        check_that("monotone", np.diff([3, 2]) > 0, detail="values 3, 2")
