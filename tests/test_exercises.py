"""gencore.exercises: every reference passes, every typical mistake fails with its own hint."""
from __future__ import annotations

import math

import pytest
import torch

import gencore
from gencore import exercises as E
from gencore.vae import kl_normal

ALL = E.available()
WITH_MISTAKES = [(n, i) for n in ALL for i in range(len(E.EXERCISES[n].mistakes))]


def test_the_registry_covers_the_chapters_exercises():
    assert {"gaussian_log_prob", "kl_normal", "optimal_discriminator", "sinkhorn_step", "conjugate_kl",
            "conjugate_js", "conjugate_gan"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_reference_solution_passes(name, capsys):
    v = E.check(name, E.EXERCISES[name].reference)
    assert v.passed and bool(v)
    assert capsys.readouterr().out.startswith(f"✓ {name}: correct on all")


@pytest.mark.parametrize("name, i", WITH_MISTAKES)
def test_each_typical_mistake_fails_with_its_hint(name, i):
    m = E.EXERCISES[name].mistakes[i]
    v = E.check(name, m.wrong)
    assert not v.passed
    assert v.message == m.hint or "NaN or inf" in v.message, v.message


@pytest.mark.parametrize("name", ALL)
def test_generic_mistakes_are_named(name):
    ref = E.EXERCISES[name].reference

    def negated(*args):
        out = ref(*args)
        return tuple(-o for o in out) if isinstance(out, tuple) else -out

    def stub(*args):
        raise NotImplementedError

    def broken(*args):  # an extra axis on the (first) result
        out = ref(*args)
        return (out[0][None], *out[1:]) if isinstance(out, tuple) else out[..., None]

    assert "wrong sign" in E.check(name, negated).message
    assert E.check(name, stub).message.startswith("not implemented yet")
    assert E.check(name, broken).message.startswith("wrong shape")
    with pytest.raises(gencore.ClaimError, match=f"exercise {name} failed"):
        E.check(name, stub, strict=True)


def test_handwritten_student_answers_get_specific_hints():
    # a KL without the 1/2, written as a student would
    def kl_no_half(mq, lq, mp, lp):
        return (lp - lq + (lq.exp() + (mq - mp) ** 2) / lp.exp() - 1).sum(-1)
    assert "factor 2" in E.check("kl_normal", kl_no_half).message

    # the reviewer's favourite: a Gaussian log-density with the constant -(D^2/2) log 2 pi
    def logp_wrong_constant(x, m, lv):
        d = x.shape[-1]
        return -0.5 * (((x - m) ** 2) / lv.exp() + lv).sum(-1) - 0.5 * d * d * math.log(2 * math.pi)
    assert "not -d^2/2 log(2 pi)" in E.check("gaussian_log_prob", logp_wrong_constant).message

    # Sinkhorn with K instead of K^T: a shape error, explained
    msg = E.check("sinkhorn_step", lambda u, v, K, a, b: (a / (K @ v), b / (K @ (a / (K @ v))))).message
    assert "needs K.T" in msg
    # an answer that is just wrong gets the measured error, not a made-up diagnosis
    msg = E.check("optimal_discriminator", lambda p, q: p / (p + 2 * q)).message
    assert msg.startswith("wrong values (max error")
    # a constant offset is measured
    assert "off by a constant: your result is the expected one +1" in E.check(
        "kl_normal", lambda *a: kl_normal(*a) + 1.0).message


def test_nan_and_non_tensor_results_are_explained():
    assert "NaN or inf" in E.check("kl_normal", lambda mq, *a: mq.sum(-1) * float("nan")).message
    assert "expected a tensor" in E.check("kl_normal", lambda *a: "0.3").message


def test_check_rejects_unknown_names_and_non_functions():
    with pytest.raises(KeyError, match="unknown exercise 'kl'; available: "):
        E.check("kl", kl_normal)
    with pytest.raises(TypeError, match="fn must be a function"):
        E.check("kl_normal", 3)
    with pytest.raises(ValueError, match="already registered"):
        E.register(E.EXERCISES["kl_normal"])


def test_verdict_repr_is_what_the_student_sees():
    v = E.Verdict("kl_normal", False, "wrong sign")
    assert repr(v) == "✗ kl_normal: wrong sign" and not v
    assert torch.is_tensor(E.EXERCISES["kl_normal"].cases()[0][0])
