"""Tests for d2l_utils.optim: every optimiser and schedule against torch.optim (float64)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from d2l_utils.datasets import ArrayLoader
from d2l_utils.optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    Optimizer,
    RMSProp,
    ScheduledLR,
    cosine_annealing,
    step_decay,
    warmup_cosine,
)
from d2l_utils.train import fit

STEPS = 50


def _params(shapes, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]


def _loss(params, targets, t):
    """A random non-quadratic loss of several parameter tensors (changing with the step t)."""
    return sum(((p - q) ** 2).sum() + 0.3 * torch.sin(2 * p + 0.1 * t).sum()
               for p, q in zip(params, targets, strict=True))


def _step(optimizer, params, targets, t):
    optimizer.zero_grad()
    _loss(params, targets, t).backward()
    if t % 7 == 3:  # sometimes a parameter has no gradient: it must be skipped
        params[0].grad = None
    optimizer.step()


def _run(make_optimizer, shapes, seed, steps=STEPS):
    """Minimise the loss with one optimiser; return the parameters."""
    params = [p.requires_grad_() for p in _params(shapes, seed)]
    targets = _params(shapes, seed + 1)
    optimizer = make_optimizer(params)
    for t in range(steps):
        _step(optimizer, params, targets, t)
    return [p.detach() for p in params]


def _assert_same(make_ours, make_theirs, shapes, seed, steps=STEPS):
    """Run both optimisers in lockstep: after every step the parameters agree to rounding
    error (1e-10 relative, 1e-12 absolute), and theirs are then reset to ours. Comparing
    only the end of two free runs is not sound: on this loss a large step makes the dynamics
    chaotic, and two runs that differ by one rounding (1e-16) after 10 steps can differ by
    1e-5 after 50, whichever is right."""
    ours = [p.requires_grad_() for p in _params(shapes, seed)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    targets = _params(shapes, seed + 1)
    opt_ours, opt_theirs = make_ours(ours), make_theirs(theirs)
    for t in range(steps):
        _step(opt_ours, ours, targets, t)
        _step(opt_theirs, theirs, targets, t)
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-10, atol=1e-12,
                                       msg=lambda m, t=t: f"after step {t + 1}: {m}")
            with torch.no_grad():
                b.copy_(a)


shapes_st = st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple),
                     min_size=1, max_size=3)
lr_st = st.floats(1e-3, 0.2)
decay_st = st.sampled_from([0.0, 1e-3, 0.05])


@settings(max_examples=20, deadline=None)
@given(shapes=shapes_st, seed=st.integers(0, 1000), lr=lr_st, momentum=st.floats(0.0, 0.95),
       dampening=st.sampled_from([0.0, 0.3]), nesterov=st.booleans(), wd=decay_st)
def test_sgd_matches_torch(shapes, seed, lr, momentum, dampening, nesterov, wd):
    nesterov = nesterov and momentum > 0
    dampening = 0.0 if nesterov else dampening
    kw = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=wd, nesterov=nesterov)
    _assert_same(lambda p: SGD(p, **kw), lambda p: torch.optim.SGD(p, **kw), shapes, seed)


@settings(max_examples=20, deadline=None)
@given(shapes=shapes_st, seed=st.integers(0, 1000), lr=st.floats(1e-3, 0.5),
       eps=st.sampled_from([1e-10, 1e-3]), init=st.sampled_from([0.0, 0.1, 2.0]), wd=decay_st)
def test_adagrad_matches_torch(shapes, seed, lr, eps, init, wd):
    kw = dict(lr=lr, eps=eps, initial_accumulator_value=init, weight_decay=wd)
    _assert_same(lambda p: Adagrad(p, **kw), lambda p: torch.optim.Adagrad(p, **kw), shapes, seed)


@settings(max_examples=20, deadline=None)
@given(shapes=shapes_st, seed=st.integers(0, 1000), lr=lr_st, alpha=st.floats(0.5, 0.999),
       eps=st.sampled_from([1e-8, 1e-3]), momentum=st.sampled_from([0.0, 0.5, 0.9]), wd=decay_st)
def test_rmsprop_matches_torch(shapes, seed, lr, alpha, eps, momentum, wd):
    kw = dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=wd)
    _assert_same(lambda p: RMSProp(p, **kw), lambda p: torch.optim.RMSprop(p, **kw), shapes, seed)


@settings(max_examples=20, deadline=None)
@given(shapes=shapes_st, seed=st.integers(0, 1000), lr=lr_st, beta1=st.floats(0.0, 0.95),
       beta2=st.floats(0.9, 0.9999), eps=st.sampled_from([1e-8, 1e-3]), wd=decay_st)
def test_adam_and_adamw_match_torch(shapes, seed, lr, beta1, beta2, eps, wd):
    kw = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=wd)
    _assert_same(lambda p: Adam(p, **kw), lambda p: torch.optim.Adam(p, **kw), shapes, seed)
    _assert_same(lambda p: AdamW(p, **kw), lambda p: torch.optim.AdamW(p, **kw), shapes, seed)


def test_adamw_differs_from_adam_with_decay():
    shapes, kw = [(3, 4)], dict(lr=0.05, weight_decay=0.1)
    a = _run(lambda p: Adam(p, **kw), shapes, 0)[0]
    b = _run(lambda p: AdamW(p, **kw), shapes, 0)[0]
    assert (a - b).abs().max() > 1e-3


def test_zero_grad_sets_none():
    w = torch.ones(3, requires_grad=True)
    optimizer = SGD([w], lr=0.1)
    (w**2).sum().backward()
    optimizer.zero_grad()
    assert w.grad is None


def test_zero_grad_can_zero_in_place_as_pytorch_does():
    w, v = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    optimizer = Adam([w, v])
    (w**2).sum().backward()  # v gets no gradient
    grad = w.grad
    optimizer.zero_grad(set_to_none=False)
    assert w.grad is grad and bool((grad == 0).all()) and v.grad is None


def test_fit_accepts_our_optimizers():
    """The book's fit calls zero_grad(set_to_none=True), as with a torch.optim optimizer."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=gen)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Linear(3, 2)
    history = fit(model, ArrayLoader(x, y, batch_size=16), epochs=3, device="cpu",
                  optimizer=Adam(model.parameters(), lr=0.05), progress=False)
    assert history["train_loss"][-1] < history["train_loss"][0]


@pytest.mark.parametrize("make", [
    lambda p: SGD(p, lr=-0.1),
    lambda p: SGD(p, lr=0.1, momentum=-0.5),
    lambda p: SGD(p, lr=0.1, momentum=1.0),
    lambda p: SGD(p, lr=0.1, nesterov=True),
    lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
    lambda p: SGD(p, lr=0.1, weight_decay=-1e-3),
    lambda p: Adagrad(p, lr=0.0),
    lambda p: Adagrad(p, eps=-1e-10),
    lambda p: Adagrad(p, initial_accumulator_value=-0.1),
    lambda p: RMSProp(p, lr=0.1, alpha=1.0),
    lambda p: RMSProp(p, lr=0.1, eps=-1.0),
    lambda p: Adam(p, lr=-1e-3),
    lambda p: Adam(p, betas=(1.0, 0.999)),
    lambda p: Adam(p, betas=(0.9, -0.1)),
    lambda p: Adam(p, betas=(0.9,)),
    lambda p: AdamW(p, weight_decay=-0.01),
    lambda p: SGD([], lr=0.1),
])
def test_bad_hyperparameters_raise_value_error(make):
    with pytest.raises(ValueError):
        make([torch.zeros(2, requires_grad=True)])


@pytest.mark.parametrize("make, match", [
    (lambda p: SGD(p, lr=float("inf")), "lr must be finite, got inf"),
    (lambda p: SGD(p, lr=float("nan")), "lr must be finite, got nan"),
    (lambda p: SGD(p, lr=0.0), r"lr must be in \(0, inf\), got 0.0"),
    (lambda p: Adam(p, lr=-float("inf")), "lr must be finite, got -inf"),
    (lambda p: SGD(p, lr=0.1, momentum=float("nan")), "momentum must be finite"),
    (lambda p: SGD(p, lr=0.1, momentum=1.0), r"momentum must be in \[0, 1\), got 1.0"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), "Nesterov momentum needs momentum > 0"),
    (lambda p: SGD(p, lr=0.1, weight_decay=float("inf")), "weight_decay must be finite"),
    (lambda p: Adagrad(p, initial_accumulator_value=-1.0), "initial_accumulator_value must be in"),
    (lambda p: RMSProp(p, alpha=float("nan")), "alpha must be finite"),
    (lambda p: RMSProp(p, eps=float("inf")), "eps must be finite"),
    (lambda p: Adam(p, betas=(0.9, float("nan"))), "beta2 must be finite"),
    (lambda p: Adam(p, betas=(0.9,)), r"betas must be a pair \(beta1, beta2\)"),
    (lambda p: AdamW(p, weight_decay=float("nan")), "weight_decay must be finite"),
])
def test_non_finite_and_out_of_range_hyperparameters_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make([torch.zeros(2, requires_grad=True)])


def test_optimizer_base_class_mirrors_pytorchs_name():
    assert issubclass(SGD, Optimizer) and issubclass(Adam, Optimizer)
    assert issubclass(RMSProp, Optimizer) and issubclass(AdamW, Optimizer)
    assert issubclass(Adagrad, Optimizer)
    assert Optimizer.__name__ == torch.optim.Optimizer.__name__


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError, match="lr must be a number, got str"):
        SGD([torch.zeros(2, requires_grad=True)], lr="0.1")
    with pytest.raises(TypeError, match="each parameter must be a torch.Tensor, got list"):
        Adam([[1.0, 2.0]])
    with pytest.raises(ValueError, match="empty list of parameters"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="schedule must be a function"):
        ScheduledLR(SGD([torch.zeros(1, requires_grad=True)], lr=0.1), 0.1)


def _torch_rates(make_scheduler, steps, base_lr):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    scheduler = make_scheduler(optimizer)
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    return rates


sched = torch.optim.lr_scheduler


@settings(max_examples=15, deadline=None)
@given(base=st.floats(1e-4, 1.0), size=st.integers(1, 40), gamma=st.floats(0.05, 0.99))
def test_step_decay_matches_step_lr(base, size, gamma):
    ours = [step_decay(t, base, size, gamma) for t in range(121)]
    theirs = _torch_rates(lambda o: sched.StepLR(o, step_size=size, gamma=gamma), 120, base)
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-14)


@settings(max_examples=15, deadline=None)
@given(base=st.floats(1e-3, 1.0), total=st.integers(1, 150), floor=st.floats(0.0, 1e-3))
def test_cosine_matches_cosine_annealing_lr(base, total, floor):
    ours = [cosine_annealing(t, base, total, floor) for t in range(total + 1)]
    theirs = _torch_rates(lambda o: sched.CosineAnnealingLR(o, T_max=total, eta_min=floor),
                          total, base)
    torch.testing.assert_close(ours, theirs, rtol=1e-7, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(base=st.floats(1e-3, 1.0), warm=st.integers(1, 20), extra=st.integers(1, 100),
       start=st.floats(0.01, 0.9), floor=st.floats(0.0, 1e-4))
def test_warmup_cosine_matches_sequential_lr(base, warm, extra, start, floor):
    total = warm + extra
    ours = [warmup_cosine(t, base, warm, total, start, floor) for t in range(total + 1)]
    theirs = _torch_rates(lambda o: sched.SequentialLR(o, [
        sched.LinearLR(o, start_factor=start, total_iters=warm),
        sched.CosineAnnealingLR(o, T_max=extra, eta_min=floor)], milestones=[warm]), total, base)
    torch.testing.assert_close(ours, theirs, rtol=1e-7, atol=1e-12)


def test_schedules_reject_bad_arguments():
    with pytest.raises(ValueError):
        step_decay(-1, 0.1, 10)
    with pytest.raises(ValueError):
        step_decay(0, 0.1, 0)
    with pytest.raises(ValueError):
        cosine_annealing(0, 0.1, 0)
    with pytest.raises(ValueError):
        warmup_cosine(0, 0.1, 10, 10)
    with pytest.raises(ValueError, match="need step >= 0"):
        warmup_cosine(-1, 0.1, 5, 10)


def test_scheduled_lr_drives_ours_and_torch():
    w1 = torch.zeros(2, requires_grad=True)
    w2 = torch.zeros(2, requires_grad=True)
    ours, theirs = SGD([w1], lr=1.0), torch.optim.SGD([w2], lr=1.0)
    s1 = ScheduledLR(ours, lambda t: cosine_annealing(t, 0.5, 10))
    s2 = ScheduledLR(theirs, lambda t: cosine_annealing(t, 0.5, 10))
    assert ours.lr == theirs.param_groups[0]["lr"] == 0.5
    for _ in range(10):
        s1.step()
        s2.step()
    assert ours.lr == pytest.approx(0.0, abs=1e-15)
    assert theirs.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-15)
    assert s1.lr == ours.lr
