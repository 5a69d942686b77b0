"""gencore.train.fit: the single training loop of the book."""
import math

import pytest
import torch

from gencore import nets
from gencore.train import NonFiniteLossError, every, fit, load_checkpoint, make_step, save_checkpoint


def _regression(seed=0, n=256):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    w = torch.tensor([[1.0], [-2.0], [0.5]])
    return x, x @ w + 0.3


def test_fit_recovers_a_linear_model():
    x, y = _regression()
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hist = fit(make_step(lambda b: ((model(b[0]) - b[1]) ** 2).mean(), opt), (x, y), steps=300,
               batch_size=32, progress=False)
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[1.0, -2.0, 0.5]]), atol=1e-3, rtol=0)
    assert hist.last("loss") < 1e-6
    assert hist["loss"][0] > 100 * hist.last("loss")


def test_each_epoch_visits_every_row_once():
    data = torch.arange(10).float()
    seen = []
    fit(lambda b: seen.append(b.clone()) or {"loss": 0.0}, data, steps=5, batch_size=4, progress=False)
    # batches of 4 from 10 rows: 2 full batches per epoch, then a new permutation
    first_epoch = torch.cat(seen[:2])
    assert len(first_epoch.unique()) == 8
    assert all(len(b) == 4 for b in seen)


def test_batches_are_reproducible_with_the_seed():
    data = torch.arange(100).float()

    def batches(seed):
        out = []
        fit(lambda b: out.append(b.clone()) or {"loss": 0.0}, data, steps=3, batch_size=10, seed=seed,
            progress=False)
        return torch.stack(out)

    assert torch.equal(batches(1), batches(1))
    assert not torch.equal(batches(1), batches(2))


def test_batch_size_is_capped_and_tuples_stay_aligned():
    x = torch.arange(6).float()
    y = 10 * x
    got = []
    fit(lambda b: got.append(b) or {"loss": 0.0}, (x, y), steps=1, batch_size=100, progress=False)
    bx, by = got[0]
    assert len(bx) == 6 and torch.equal(by, 10 * bx)


def test_history_logs_every_k_steps_and_keeps_the_last_step():
    hist = fit(lambda b: {"a": 1.0, "b": torch.tensor(2.0)}, None, steps=25, log_every=10, progress=False)
    assert hist.steps == list(range(1, 26))  # pending values are flushed, none lost
    assert hist.keys() == ["a", "b"] and hist.last("b", 5) == 2.0
    with pytest.raises(KeyError, match="no loss named 'c'; logged: a, b"):
        hist["c"]


def test_nan_guard_names_the_loss_and_the_exact_step():
    def step(batch, counter=[0]):
        counter[0] += 1
        return {"d_loss": 1.0, "g_loss": math.nan if counter[0] == 37 else 0.5}

    with pytest.raises(NonFiniteLossError, match="loss 'g_loss' is nan at step 37"):
        fit(step, None, steps=100, log_every=20, progress=False)
    with pytest.raises(NonFiniteLossError, match="loss 'loss' is infinite at step 1"):
        fit(lambda b: {"loss": torch.tensor(float("inf"))}, None, steps=3, progress=False)


def test_callbacks_run_and_can_stop_training():
    calls = []

    def stop_at_30(step, history):
        calls.append(step)
        return step >= 30

    hist = fit(lambda b: {"loss": 1.0}, None, steps=100, callbacks=[every(10, stop_at_30)], progress=False)
    assert calls == [10, 20, 30] and hist.steps[-1] == 30


@pytest.mark.parametrize("kw, msg", [
    (dict(steps=0), "steps must be a positive integer"),
    (dict(steps=5, batch_size=0), "batch_size must be a positive integer"),
    (dict(steps=5, log_every=-1), "log_every must be a positive integer"),
])
def test_fit_rejects_bad_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg):
        fit(lambda b: {"loss": 0.0}, None, progress=False, **kw)


def test_fit_rejects_bad_data_and_bad_step_output():
    with pytest.raises(ValueError, match="same first dimension"):
        fit(lambda b: {"loss": 0.0}, (torch.zeros(3), torch.zeros(4)), steps=1, progress=False)
    with pytest.raises(TypeError, match="non-empty dict"):
        fit(lambda b: 0.0, None, steps=1, progress=False)


def test_make_step_logs_extra_entries_and_needs_a_loss_key():
    p = torch.nn.Parameter(torch.tensor(3.0))
    opt = torch.optim.SGD([p], lr=0.5)
    hist = fit(make_step(lambda b: {"loss": p**2, "p": p}, opt), None, steps=3, progress=False)
    assert hist["p"].tolist() == [3.0, 0.0, 0.0]
    with pytest.raises(KeyError, match="without a 'loss' entry"):
        fit(make_step(lambda b: {"nll": p**2}, opt), None, steps=1, progress=False)


def test_checkpoint_roundtrip_is_atomic(tmp_path):
    model = nets.mlp([2, 4, 1])
    path = tmp_path / "ckpt" / "model.pt"
    save_checkpoint({"model": model.state_dict(), "step": 7}, path)
    state = load_checkpoint(path)
    assert state["step"] == 7
    for k, v in model.state_dict().items():
        assert torch.equal(state["model"][k], v)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temporary left behind

    class Boom:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        save_checkpoint({"bad": Boom()}, path)
    assert load_checkpoint(path)["step"] == 7  # the old checkpoint is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]


def test_load_checkpoint_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": _Custom()}, path)
    with pytest.raises(Exception, match="[Ww]eights only"):
        load_checkpoint(path)


class _Custom:
    pass


@pytest.mark.cuda
def test_fit_trains_on_cuda_without_leaving_the_device():
    x, y = _regression()
    x, y = x.cuda(), y.cuda()
    model = torch.nn.Linear(3, 1).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    hist = fit(make_step(lambda b: ((model(b[0]) - b[1]) ** 2).mean(), opt), (x, y), steps=400,
               batch_size=64, log_every=50, progress=False)
    assert hist.last("loss") < 1e-3 and len(hist) == 400


def test_fit_rejects_a_global_batch_not_divisible_by_the_ranks(monkeypatch):
    from gencore import distributed as gdist
    monkeypatch.setattr(gdist, "is_distributed", lambda: True)
    monkeypatch.setattr(gdist, "world_size", lambda: 3)
    monkeypatch.setattr(gdist, "rank", lambda: 0)
    with pytest.raises(ValueError, match=r"batch_size \(the global batch, 64\) must be divisible by the number of processes \(3\)"):
        fit(lambda b: {"loss": 0.0}, torch.zeros(100, 2), steps=1, batch_size=64, progress=False)
