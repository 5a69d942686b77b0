"""gencore.checks: the helper that turns a sentence of the book into an assertion."""
import math

import numpy as np
import pytest
import torch

import gencore
from gencore import ClaimError, check_close, check_over_seeds, check_that


def test_check_close_passes_and_prints_one_stable_line(capsys):
    check_close("D* matches p/(p+q)", torch.tensor([0.5, 0.25]), np.array([0.5, 0.26]), 0.02)
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


def test_check_close_returns_none_so_a_cell_shows_no_stray_number(capsys):
    assert check_close("x", 1.0, 1.0, 0.1) is None
    assert gencore.max_error([1.0, 2.5], [1.0, 2.0]) == pytest.approx(0.5)
    assert gencore.max_error([110.0], [100.0], relative=True) == pytest.approx(0.1)


def test_check_over_seeds_reports_worst_case_and_spread(capsys):
    report = check_over_seeds("x is small", lambda s: 0.1 * s, seeds=[0, 1, 2], at_most=0.5)
    out = capsys.readouterr().out
    assert out == "check passed: x is small (3/3 seeds: 0, 1, 2; worst 0.2, mean 0.1 ± 0.1; needs <= 0.5)\n"
    assert report.values == pytest.approx((0.0, 0.1, 0.2)) and report.fraction == 1.0
    assert report.std == pytest.approx(0.1)


def test_check_over_seeds_fails_when_only_one_lucky_seed_passes():
    # The failure the hostile reader found: a claim that holds for seed 0 only.
    jsd = {0: 0.063, 1: 0.091, 2: 0.169}
    with pytest.raises(ClaimError, match=r"held for 1/3 seeds, needs 3 \(seed 0: 0\.063, seed 1: 0\.091 \(fails\)"):
        check_over_seeds("JSD < 0.07", jsd.__getitem__, seeds=[0, 1, 2], at_most=0.07)
    # a fraction can be required instead of all seeds
    report = check_over_seeds("JSD < 0.1", jsd.__getitem__, seeds=[0, 1, 2], at_most=0.1, min_fraction=2 / 3)
    assert report.passed == (True, True, False)
    with pytest.raises(ClaimError):
        check_over_seeds("JSD < 0.1", jsd.__getitem__, seeds=[0, 1, 2], at_most=0.1, min_fraction=0.9)


def test_check_over_seeds_bool_and_two_sided_and_nan(capsys):
    check_over_seeds("covers 8 modes", lambda s: s < 5, seeds=range(3))
    assert "3/3 seeds: 0, 1, 2)" in capsys.readouterr().out
    with pytest.raises(ClaimError):
        check_over_seeds("covers 8 modes", lambda s: s < 1, seeds=range(3))
    check_over_seeds("in band", lambda s: 1.0 + s / 10, seeds=[0, 1], at_least=0.9, at_most=1.2)
    with pytest.raises(ClaimError):  # a NaN result never passes, whatever the threshold
        check_over_seeds("finite", lambda s: float("nan"), seeds=[0], at_most=1.0)
    with pytest.raises(ClaimError):
        check_over_seeds("tensor", lambda s: torch.tensor(2.0), seeds=[0], at_most=1.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(seeds=[]), "at least one seed"),
    (dict(seeds=[1, 1]), "distinct"),
    (dict(min_fraction=0), "min_fraction"),
    (dict(at_most=math.inf), "at_most must be a finite number"),
])
def test_check_over_seeds_rejects_bad_arguments(kwargs, match):
    args = dict(seeds=[0, 1], at_most=1.0) | kwargs
    with pytest.raises(ValueError, match=match):
        check_over_seeds("c", lambda s: 0.0, **args)


def test_check_over_seeds_needs_a_threshold_for_numbers():
    with pytest.raises(ValueError, match="give at_most and/or at_least"):
        check_over_seeds("c", lambda s: 0.0, seeds=[0])
    with pytest.raises(TypeError, match="number or a bool"):
        check_over_seeds("c", lambda s: "high", seeds=[0], at_most=1.0)


def test_submodules_load_lazily_after_import_gencore():
    import subprocess
    import sys
    code = "import gencore; print(gencore.metrics.__name__, gencore.ot.__name__); gencore.nope"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "gencore.metrics gencore.ot" in r.stdout
    assert "has no attribute 'nope'" in r.stderr
