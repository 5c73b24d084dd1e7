"""The search and robust baselines (GS, DiCE, ROAR, PROBE, TAP) and their shared parts,
each against something independent: closed forms, a linear program, Monte Carlo, and the
invariants every recourse must keep (immutables exact, categoricals valid, fixed seeds)."""
import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from scipy.stats import norm

from baselines import (SEARCH_METHODS, PROBE, ROAR, TAP, DiCE, FeatureRoles, GrowingSpheres, Wachter,
                       bce_to_one, bce_to_target, dice_fork_loss, dpp_diversity, gradient_search,
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
    np.testing.assert_array_equal(out, run().recourse(queries))


class ConstantVerifier(torch.nn.Module):
    """A TAP verifier that gives every pair the same logit (accept: +10, reject: -10)."""

    def __init__(self, logit):
        super().__init__()
        self.logit = logit

    def forward(self, xa, xb):
        return torch.full((len(xa),), float(self.logit))


def blocked_problem():
    """h's logit = 8 x0 + x1 + x2 - 8.6 with x0 a binary immutable. A query with x0 = 0 needs
    x1 + x2 > 8.6, out of reach of every capped search in SMALL; one with x0 = 1 needs only
    x1 + x2 > 0.6 and starts 0.01 to 0.05 short of it. Rows 0, 2, 4, 6 are the blocked ones."""
    h = LinearH([8.0, 1.0, 1.0], -8.6)
    s = np.array([0.55, 0.57, 0.59, 0.56, 0.58, 0.55, 0.57, 0.59])             # x1 + x2 per query
    Q = np.stack([np.arange(8) % 2, s / 2, s / 2], axis=1).astype(np.float32)
    X = np.random.default_rng(0).random((60, 3)).astype(np.float32)
    X[:, 0] = np.arange(60) % 2
    roles = dict(immutable=np.array([1, 0, 0], bool), categorical=np.array([1, 0, 0], bool))
    return X, (h.predict_proba(X) > 0.5).astype(int), h, roles, Q


@pytest.mark.parametrize("name, mode", [(m, mode) for m in SEARCH_METHODS for mode in ("designed", "paper")
                                         if m != "probe" and (m, mode) != ("roar", "paper")])
def test_n_failed_counts_exactly_the_blocked_rows(name, mode):
    """Methods whose own test is h(x+) > 0.5 (TAP with a verifier that accepts everything,
    designed ROAR with its robust test) fail exactly on the four rows no search can flip.
    (Paper-mode ROAR is left out: its surrogate, P(y=1) per std unit used as logit weights
    on raw x, need not flip even the reachable rows.)"""
    X, y, h, roles, Q = blocked_problem()
    more = {"wachter": {"n_rounds": 1}, "gs": {"max_shells": 200},              # GS paper: radius <= 2
            "tap": {"n_steps": 1, "lam": 1 / 16, "n_iter": 100}}.get(name, {})
    caps = {**SMALL[name], **more}
    method = SEARCH_METHODS[name](mode=mode, random_state=0, **caps).fit(X, y, h, **roles)
    if name == "tap":
        method.verifier_ = ConstantVerifier(10.0)
    method.recourse(Q)
    assert method.n_failed_ == 4
    if name == "tap":                                                  # TAP's own test has the verifier too
        method.verifier_ = ConstantVerifier(-10.0)
        method.recourse(Q)
        assert method.n_failed_ == len(Q)


@pytest.mark.parametrize("mode", ["designed", "paper"])
def test_probe_n_failed_counts_rows_h_accepts_but_the_invalidation_test_rejects(mode):
    """For a linear h the invalidation rate has a closed form, 1 - Phi(logit / (sigma ||w||)),
    independent of the Monte Carlo estimate PROBE tests with. Here no row can reach a rate
    below r + eps = 0.06 (that needs logit > 1.27), while h accepts some of them."""
    X, y, h, roles, Q = blocked_problem()
    probe = PROBE(mode=mode, n_iter=50, n_rounds=3, n_mc=4000).fit(X, y, h, **roles)
    out = probe.recourse(Q)
    logit = out @ np.array([8.0, 1.0, 1.0]) - 8.6
    ir = 1 - norm.cdf(logit / (0.1 * np.sqrt(66.0)))
    assert np.all(np.abs(ir - 0.06) > 0.03)                             # no row near the threshold
    expected = int(((logit <= 0) | (ir >= 0.06)).sum())
    assert probe.n_failed_ == expected == len(Q)
    assert (logit > 0).sum() >= 2                                       # an h-only count would differ


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


def test_gradient_search_judges_the_raw_point_or_the_projected_one():
    # logit = 4 (c - 0.3), c a binary mutable searched as a continuous value. The raw point
    # passes h's test once c > 0.3; the projected one only once c > 0.5 (rounded up to 1).
    h = LinearH([4.0], -1.2)
    roles = FeatureRoles(np.array([False]), np.array([True]))
    x0 = torch.zeros(1, 1)
    loss = lambda v, x, lam: bce_to_one(h(x))
    run = lambda judge: gradient_search(x0, loss, roles, x0, h=h, lr=0.01, n_iter=200, judge=judge)
    x_plus, found, v = run("raw")                   # the fork's PROBE: stops just past c = 0.3
    assert found.item() and 0.3 < v.item() < 0.33 and x_plus.item() == 0.0
    x_plus, found, v = run("projected")             # what the user gets must pass: c past 0.5
    assert found.item() and 0.5 < v.item() < 0.53 and x_plus.item() == 1.0


# ----------------------------------------------------------------------------- Wachter's paper mode

def test_wachter_paper_mode_leaves_the_data_range_and_never_moves_a_categorical():
    # logit = 3 c - 4 x1 - 0.8 with c a mutable binary and x1 in [0, 1]; from (0, 0.05) the
    # cheapest flip through x1 alone is x1* = -0.2, outside the range. The fork clamps a copy,
    # so its search reaches x1* (stopping just past it) and, with c rounded inside the loss,
    # never touches c. As designed, x1 stops at 0 and c carries the flip.
    h = LinearH([3.0, -4.0], -0.8)
    X = np.array([[0.0, 0.05]], dtype=np.float32)
    roles = dict(immutable=np.array([False, False]), categorical=np.array([True, False]))
    paper = Wachter(mode="paper", n_iter=300).fit(X, [0], h, **roles).recourse(X)
    assert paper[0, 0] == 0.0 and -0.23 < paper[0, 1] < -0.2
    designed = Wachter(mode="designed", n_iter=300).fit(X, [0], h, **roles).recourse(X)
    assert designed[0, 0] == 1.0 and designed[0, 1] >= 0.0


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


def test_growing_spheres_paper_mode_redraws_each_mutable_binary_as_a_fair_coin():
    # The fork's candidates: each mutable binary ~ Bernoulli(1/2) whatever the row holds, a
    # one-hot group a uniform category, immutables untouched. From 20 x 200 candidates that
    # all start at 1, the count of zeros is binomial(4000, 1/2): within 3 sd = 95 of 2000.
    X, y, h, roles = mixed_problem()
    gs = GrowingSpheres(mode="paper").fit(X, y, h, **roles)
    cand = torch.ones(20, 200, 6)
    out = gs._redraw_categoricals(cand.clone(), torch.Generator().manual_seed(0))
    assert torch.all(out[:, :, [0, 4, 5]] == 1)                        # immutable binary, continuous
    group = out[:, :, 1:4]
    assert torch.all(group.sum(dim=2) == 1)
    counts = group.sum(dim=(0, 1))                                     # each category ~ 4000 / 3
    assert torch.all((counts - 4000 / 3).abs() < 3 * (4000 * 2 / 9) ** 0.5)
    binary = torch.ones(20, 200, 3)
    gs2 = GrowingSpheres(mode="paper").fit(np.zeros((4, 3), np.float32), [0] * 4, LinearH([1.0, 0, 0], 0.0),
                                           immutable=np.zeros(3, bool), categorical=np.array([1, 0, 0], bool))
    zeros = (gs2._redraw_categoricals(binary, torch.Generator().manual_seed(1))[:, :, 0] == 0).sum().item()
    assert abs(zeros - 2000) < 95


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


def test_roar_paper_surrogate_is_lime_on_the_probability_in_std_units():
    # For a nearly linear h (logit 0.1 x0 - 0.2 x1 + 0.05, so h = sigmoid stays within
    # 0.49-0.52) LIME's regression of P(y = 1) has slope h(1 - h) w per std unit, about
    # 0.25 w scale, and its intercept is the fit at the training mean. The fork then uses
    # that (W, b) as logit weights on raw x+ (mixed units).
    w, b = np.array([0.1, -0.2]), 0.05
    h = LinearH(w, b)
    X = np.random.default_rng(0).random((500, 2)).astype(np.float32)
    roar = ROAR(mode="paper", n_lime=5000).fit(X, np.zeros(500), h)
    W, b0 = roar.surrogate(torch.as_tensor(X[:3]))
    scale, mean = X.std(axis=0), X.mean(axis=0)
    np.testing.assert_allclose(W.numpy(), np.tile(0.25 * w * scale, (3, 1)), rtol=0.02)
    np.testing.assert_allclose(b0.numpy(), 1 / (1 + np.exp(-(mean @ w + b))), atol=2e-3)


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


def test_bce_to_target_is_smallest_at_the_target():
    # d/dl [t softplus(-l) + (1 - t) softplus(l)] = sigmoid(l) - t: zero where h = t
    logits = torch.linspace(-3, 3, 13, requires_grad=True)
    grad, = torch.autograd.grad(bce_to_target(logits, 0.55).sum(), logits)
    torch.testing.assert_close(grad, torch.sigmoid(logits.detach()) - 0.55)
    torch.testing.assert_close(bce_to_target(logits, 1.0), bce_to_one(logits))


def test_probe_paper_mode_aims_at_h_055_where_designed_aims_at_1():
    # r = 1 switches the invalidation term off (IR - r <= 0) and makes the test plain
    # h > 0.5, so the round-end point shows where each BCE term leads. With the fork's
    # target 0.55 the gradient (h - 0.55) w + lam vanishes at h = 0.55 - lam / w = 0.5475
    # (w = 4); with target 1, h rises until the clamp stops x0 at 1: h = sigmoid(2) = 0.8808.
    h = LinearH([4.0, 0.0], -2.0)
    X = np.array([[0.2, 0.5], [0.3, 0.5]], dtype=np.float32)
    kw = dict(target_ir=1.0, n_iter=300, n_rounds=1, lr=0.01, n_mc=100)
    p = {mode: h.predict_proba(PROBE(mode=mode, **kw).fit(X, [0, 0], h).recourse(X))
         for mode in ("paper", "designed")}
    np.testing.assert_allclose(p["paper"], 0.5475, atol=0.002)
    np.testing.assert_allclose(p["designed"], 1 / (1 + np.exp(-2.0)), atol=1e-4)


def test_probe_paper_mode_walks_away_once_lambda_turns_negative():
    # An unreachable invalidation target (r = eps = 0) fails every round, so every row runs
    # all rounds. lam_r = 0.01 - 0.1 r is negative from round 2: then the cost term pushes x+
    # away from x. x1 barely matters to h (weight 0.05), so nothing holds it back: Adam moves
    # it by about lr per step, 1 per 100-step round. Designed floors lam at 0 and clamps.
    h = LinearH([4.0, 0.05], -2.0)
    X = np.array([[0.2, 0.5], [0.3, 0.5]], dtype=np.float32)
    kw = dict(target_ir=0.0, eps=0.0, n_iter=100, lr=0.01, n_mc=100)
    run = lambda mode, rounds: PROBE(mode=mode, n_rounds=rounds, **kw).fit(X, [0, 0], h)
    probe = run("paper", 4)
    cost4 = np.abs(probe.recourse(X) - X).sum(axis=1)
    assert probe.rounds_.tolist() == [4, 4]
    assert np.all(cost4 - np.abs(run("paper", 2).recourse(X) - X).sum(axis=1) > 1.5)
    designed = run("designed", 4).recourse(X)
    assert np.all((designed >= 0) & (designed <= 1))


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


def test_tap_paper_mode_returns_the_last_iterate_at_p_star():
    # With the verifier accepting every pair, a try succeeds once h > 0.5. Paper mode (the TAP
    # code) offers the last iterate, where d_Y has reached 0: h >= p* = 1 - 0.9 (1 - 0.9) = 0.91
    # (reachable inside the box: h(x0 = 1) = 0.98). Designed keeps the cheapest successful
    # iterate, just past h's boundary (an Adam step of 0.01 on x0 moves the logit by 0.06).
    h = LinearH([6.0, 0.0], -2.0)
    X = np.array([[0.2, 0.5], [0.3, 0.5]], dtype=np.float32)
    p = {}
    for mode in ("paper", "designed"):
        tap = TAP(mode=mode, n_steps=1, lam=0.01, n_rounds=1, n_iter=300).fit(X, [0, 1], h)
        tap.verifier_ = ConstantVerifier(10.0)
        p[mode] = h.predict_proba(tap.recourse(X))
    assert np.all(p["paper"] >= 0.905)
    assert np.all((p["designed"] > 0.5) & (p["designed"] < 0.52))
