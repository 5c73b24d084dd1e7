"""The search and robust baselines (GS, DiCE, ROAR, PROBE, TAP) and their shared parts,
each against something independent: closed forms, a linear program, Monte Carlo, and the
invariants every recourse must keep (immutables exact, categoricals valid, fixed seeds)."""
import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from scipy.stats import norm

from baselines import (SEARCH_METHODS, ROAR, TAP, DiCE, FeatureRoles, GrowingSpheres, Wachter,
                       bce_to_one, dice_fork_loss, dpp_diversity, gradient_search,
                       invalidation_rate_first_order, invalidation_rate_mc, l1_shell_sample,
                       lime_surrogate, roar_worst_logit, tap_d_y)
from test_baselines import LinearH


def mixed_problem(n=40, seed=0):
    """Col 0 a binary immutable, cols 1-3 a three-valued one-hot group, col 4 continuous,
    col 5 a continuous immutable that may lie outside [0, 1]."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, 6)).astype(np.float32)
    X[:, 0] = rng.integers(0, 2, n)
    X[:, 1:4] = np.eye(3)[rng.integers(0, 3, n)]
    X[::3, 5] = 1.3                                                      # outside the training range
    h = LinearH([0.5, -1.0, 0.5, 1.0, 3.0, 0.5], -2.5)
    y = (h.predict_proba(X) > 0.5).astype(int)
    roles = dict(immutable=np.array([1, 0, 0, 0, 0, 1], bool),
                 categorical=np.array([1, 1, 1, 1, 0, 0], bool), groups=[[1, 2, 3]])
    return X, y, h, roles


SMALL = {  # caps that keep every method well under a second here
    "wachter": dict(n_iter=100), "gs": dict(n_samples=200),
    "dice": dict(n_iter=100, n_rounds=2), "roar": dict(n_iter=300, n_lime=300),
    "probe": dict(n_iter=50, n_rounds=3, n_mc=300), "tap": dict(n_steps=100, n_iter=40, n_rounds=2),
}


@pytest.mark.parametrize("mode", ["designed", "paper"])
@pytest.mark.parametrize("name", list(SEARCH_METHODS))
def test_every_method_keeps_immutables_and_categoricals_and_is_deterministic(name, mode):
    X, y, h, roles = mixed_problem()
    queries = X[h.predict_proba(X) <= 0.5][:8]
    run = lambda: SEARCH_METHODS[name](mode=mode, random_state=3, **SMALL[name]).fit(X, y, h, **roles)
    method = run()
    out = method.recourse(queries)
    assert out.shape == queries.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, [0, 5]], queries[:, [0, 5]])   # exact, even 1.3
    np.testing.assert_array_equal(out[:, 1:4].sum(axis=1), 1.0)        # one category ...
    assert set(np.unique(out[:, 1:4])) <= {0.0, 1.0}                   # ... one-hot
    assert method.n_failed_ == int((h.predict_proba(out) <= 0.5).sum())
    np.testing.assert_array_equal(out, run().recourse(queries))


@pytest.mark.parametrize("cls", list(SEARCH_METHODS.values()))
def test_bad_mode_is_a_value_error(cls):
    X, y, h, roles = mixed_problem()
    with pytest.raises(ValueError, match="unknown mode 'fork'"):
        cls(mode="fork").fit(X, y, h, **roles)


def test_wachter_keeps_an_immutable_outside_the_training_range():
    # Only x1 may move; x0 = 1.5 lies outside [0, 1] and must come back unchanged.
    h = LinearH([1.0, 4.0], -3.0)
    X = np.array([[1.5, 0.2], [-0.4, 0.5]], dtype=np.float32)
    out = Wachter(n_iter=100).fit(X, [0, 0], h, immutable=np.array([True, False])).recourse(X)
    np.testing.assert_array_equal(out[:, 0], X[:, 0])
    assert np.all(h.predict_proba(out) > 0.5)


# ----------------------------------------------------------------------------- shared parts

def test_l1_shell_sample_radii_and_mask():
    gen = torch.Generator().manual_seed(0)
    center = torch.rand(3, 4)
    pts = l1_shell_sample(center, 0.2, 0.3, 500, gen, mask=np.array([1, 1, 0, 1], bool))
    radius = (pts - center[:, None]).abs().sum(dim=2)
    assert pts.shape == (3, 500, 4)
    assert radius.min() >= 0.2 - 1e-6 and radius.max() < 0.3 + 1e-6
    assert torch.equal(pts[:, :, 2], center[:, None, 2].expand(3, 500))
    assert abs(radius.mean().item() - 0.25) < 0.01                     # r ~ U[0.2, 0.3)


def test_gradient_search_batched_equals_row_by_row():
    X, y, h, roles = mixed_problem(n=6, seed=1)
    rl = FeatureRoles(**roles)
    X = torch.as_tensor(X)

    def search(rows):
        loss = lambda v, x, lam: bce_to_one(h(x)) + lam * (x - rows).abs().sum(dim=1)
        return gradient_search(rows, loss, rl, rows, h=h, lams=[0.05, 0.0], lr=0.02, n_iter=150,
                               clamp=True)[0]

    together = search(X)
    alone = torch.cat([search(X[i:i + 1]) for i in range(len(X))])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- Growing Spheres

@pytest.mark.parametrize("mode", ["designed", "paper"])
def test_growing_spheres_finds_the_min_l1_flip(mode):
    # h = sigmoid(20 (x1 - 1/2)); from (0.3, 0.5) the cheapest flip moves x1 by 0.2, and
    # shells 0.01 wide must stop in [0.20, 0.21).
    h = LinearH([20.0, 0.0], -10.0)
    X = np.array([[0.3, 0.5]], dtype=np.float32)
    gs = GrowingSpheres(mode=mode).fit(X, [0], h)
    cost = np.abs(gs.recourse(X) - X).sum()
    assert 0.20 <= cost < 0.21 and gs.n_failed_ == 0


# ----------------------------------------------------------------------------- DiCE

def test_dice_returns_a_valid_candidate_and_diversity_is_positive():
    X, y, h, roles = mixed_problem()
    queries = X[h.predict_proba(X) <= 0.5][:6]
    out = DiCE(n_iter=300).fit(X, y, h, **roles).recourse(queries)
    assert np.all(h.predict_proba(out) > 0.5)
    C = torch.rand(5, 2, 3)
    d = (C[:, 0] - C[:, 1]).abs().sum(dim=1)
    expected = (1 + 1e-4) ** 2 - 1 / (1 + d) ** 2                      # det of the 2 x 2 kernel
    torch.testing.assert_close(dpp_diversity(C, torch.ones(3)), expected)
    assert torch.all(dpp_diversity(torch.rand(5, 4, 3), torch.ones(3)) > 0)


def test_dice_fork_loss_has_no_gradient_towards_x():
    C = torch.rand(4, 2, 3, requires_grad=True)
    x = torch.rand(4, 3, requires_grad=True)
    g_x, g_c = torch.autograd.grad(dice_fork_loss(C, x, 5.0).sum(), [x, C], allow_unused=True)
    assert (g_x is None or torch.all(g_x == 0)) and torch.any(g_c != 0)


# ----------------------------------------------------------------------------- ROAR

def test_roar_closed_form_equals_the_linear_program():
    rng = np.random.default_rng(0)
    for _ in range(20):
        W, x = rng.normal(size=4), rng.normal(size=4)
        b, delta = rng.normal(), rng.uniform(0.01, 0.5)
        # min over the box of (W + dW) x + b + db: the worst (lowest) logit
        res = linprog(np.append(x, 1.0), bounds=[(-delta, delta)] * 5, method="highs")
        closed = roar_worst_logit(*(torch.tensor(a, dtype=torch.float64)[None] for a in (x, W)),
                                  torch.tensor([b], dtype=torch.float64), delta)
        assert abs(closed.item() - (W @ x + b + res.fun)) < 1e-9


def test_lime_surrogate_recovers_a_linear_logit():
    h = LinearH([1.5, -2.0, 0.5], 0.3)
    X = torch.rand(4, 3)
    scale = torch.tensor([0.2, 0.3, 0.1])
    W, f_x = lime_surrogate(h, X, scale, 5000, torch.Generator().manual_seed(0), "logit")
    torch.testing.assert_close(W / scale, torch.tensor([[1.5, -2.0, 0.5]]).expand(4, 3), rtol=0.01, atol=0)
    torch.testing.assert_close(f_x, h(X).detach(), rtol=0, atol=0.01)


@pytest.mark.parametrize("delta", [0.0, 0.1])
def test_roar_with_an_exact_surrogate_stops_past_the_robust_flip(delta, monkeypatch):
    # Only x2 moves. With an exact surrogate (w, b) the worst-case logit
    # w.x + b - delta (|x0| + |x1| + x2 + 1) turns positive at
    # x2* = (delta (1 + x0 + x1) - b - w0 x0 - w1 x1) / (w2 - delta); delta = 0 is plain
    # logistic recourse with an L1 cost.
    w, b = np.array([1.0, 0.5, 2.0]), -1.5
    h = LinearH(w, b)
    X = np.array([[0.2, 0.3, 0.1], [0.4, 0.1, 0.3]], dtype=np.float32)
    roar = ROAR(delta=delta, lr=0.01, n_iter=400).fit(X, [0, 0], h, immutable=np.array([1, 1, 0], bool))
    exact = lambda X_: (torch.tensor(w, dtype=torch.float32).expand(len(X_), 3), torch.full((len(X_),), b))
    monkeypatch.setattr(roar, "surrogate", exact)
    out = roar.recourse(X)
    flip = (delta * (1 + X[:, 0] + X[:, 1]) - b - w[0] * X[:, 0] - w[1] * X[:, 1]) / (w[2] - delta)
    assert np.all(out[:, 2] > flip) and np.all(out[:, 2] - flip < 0.03)


# ----------------------------------------------------------------------------- PROBE

def test_probe_invalidation_rate_closed_form_and_monte_carlo():
    w, b, sigma = np.array([2.0, -1.0, 1.5]), -1.2, 0.1
    h = LinearH(w, b)
    X = np.array([[0.5, 0.3, 0.4], [0.6, 0.5, 0.45], [0.7, 0.2, 0.3]], dtype=np.float32)
    expected = 1 - norm.cdf((X @ w + b) / (sigma * np.linalg.norm(w)))
    first = invalidation_rate_first_order(h, torch.as_tensor(X), sigma).detach().numpy()
    np.testing.assert_allclose(first, expected, rtol=1e-4, atol=1e-6)
    n = 20_000
    mc = invalidation_rate_mc(h, torch.as_tensor(X), sigma, n, torch.Generator().manual_seed(0)).numpy()
    se = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(mc - expected) < 3 * se + 1e-12)


# ----------------------------------------------------------------------------- TAP

def test_tap_d_y_is_zero_exactly_when_p_reaches_p_star():
    p_star = 0.55
    p = torch.tensor([0.1, 0.3, 0.54, 0.55, 0.7, 0.99])
    d = tap_d_y(p, p_star)
    assert torch.all(d[:3] > 0) and torch.all(d[3:] == 0)
    kl = 0.3 * np.log(0.3 / p_star) + 0.7 * np.log(0.7 / (1 - p_star))
    assert abs(d[1].item() - kl) < 1e-6


def test_tap_verifier_beats_chance():
    rng = np.random.default_rng(0)
    X = rng.random((400, 2)).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(int)
    h = LinearH([10.0, 0.0], -5.0)
    tap = TAP(n_steps=300, verifier_lr=1e-2).fit(X[:300], y[:300], h)
    Xt, yt = torch.as_tensor(X[300:]), torch.as_tensor(y[300:])
    a, b = torch.arange(100), torch.randperm(100, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        said_different = torch.sigmoid(tap.verifier_(Xt[a], Xt[b])) >= 0.5
    accuracy = (said_different == (yt[a] != yt[b])).float().mean().item()
    assert accuracy > 0.75                                               # chance is about 0.5


def test_tap_cache_round_trip(tmp_path):
    X, y, h, roles = mixed_problem()
    first = TAP(n_steps=50, cache_dir=str(tmp_path)).fit(X, y, h, **roles)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("tap_verifier_")
    second = TAP(n_steps=50, cache_dir=str(tmp_path)).fit(X, y, h, **roles)
    for p, q in zip(first.verifier_.parameters(), second.verifier_.parameters()):
        assert torch.equal(p, q)
    TAP(n_steps=50, random_state=1, cache_dir=str(tmp_path)).fit(X, y, h, **roles)
    assert len(list(tmp_path.iterdir())) == 2                           # the seed is in the key
