"""NNR against brute force; Wachter against the closed-form flip of a linear h."""
import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from baselines import NNR, Wachter


class LinearH(torch.nn.Module):
    """A fixed logistic classifier: logit = x @ w + b."""

    def __init__(self, w, b):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float32))
        self.b = torch.nn.Parameter(torch.tensor(float(b)))

    def forward(self, x):
        return x @ self.w + self.b

    @torch.no_grad()
    def predict_proba(self, X):
        return torch.sigmoid(self(torch.as_tensor(np.asarray(X, dtype=np.float32)))).numpy()


def random_problem(seed, n=300, d=5):
    rng = np.random.default_rng(seed)
    X = rng.random((n, d)).astype(np.float32)
    X[:, 0] = rng.integers(0, 2, n)                     # a binary immutable feature
    X[:, 1] = rng.integers(0, 2, n)                     # a binary mutable categorical
    y = rng.integers(0, 2, n)
    imm = np.array([True] + [False] * (d - 1))
    cat = np.array([True, True] + [False] * (d - 2))
    h = LinearH(3 * rng.normal(size=d), 0.0)
    h.b.data = torch.tensor(float(-np.median(X @ h.w.detach().numpy())))   # h splits the data in half
    return X, y, h, imm, cat


@pytest.mark.parametrize("pool", ["label", "h", "dhplus"])
def test_nnr_matches_brute_force(pool):
    X, y, h, imm, cat = random_problem(0)
    queries, *_ = random_problem(1, n=40)
    nnr = NNR(pool=pool).fit(X, y, h, immutable=imm, categorical=cat)
    got = nnr.recourse(queries)
    n_failed = 0
    p = h.predict_proba(X)
    keep = {"label": y == 1, "h": p > 0.7, "dhplus": (y == 1) & (p > 0.7)}[pool]
    for q, r in zip(queries, got):
        best, best_cost = None, np.inf
        for x, ok in zip(X, keep):                       # the plain double loop
            cost = np.abs(x - q).sum()
            if ok and x[0] == q[0] and cost < best_cost:
                best, best_cost = x, cost
        if best is None:                                 # nothing keeps the immutable: x itself
            np.testing.assert_array_equal(r, q)
            n_failed += 1
            continue
        np.testing.assert_allclose(np.abs(r - q).sum(), best_cost, rtol=1e-5)
        assert r[0] == q[0] and any((r == x).all() for x in X[keep])
    assert nnr.n_failed_ == n_failed


def test_nnr_empty_pool_and_unfitted():
    X, y, h, imm, cat = random_problem(1)
    with pytest.raises(ValueError, match="pool 'dhplus' is empty"):
        NNR(gamma=1.0).fit(X, y, h)
    with pytest.raises(NotFittedError, match="NNR is not fitted yet"):
        NNR().recourse(X)
    with pytest.raises(NotFittedError, match="Wachter is not fitted yet"):
        Wachter().recourse(X)


def test_wachter_one_mutable_feature_lands_on_the_closed_form_flip():
    # logit = 2 x0 + 3 x1 - 4 x2 - 1; only x2 may move. The flip is at
    # x2* = (2 x0 + 3 x1 - 1) / 4, and the search must stop just past it.
    h = LinearH([2.0, 3.0, -4.0], -1.0)
    X = np.array([[0.2, 0.3, 0.9], [0.5, 0.1, 0.6], [0.4, 0.4, 0.8]], dtype=np.float32)
    imm = np.array([True, True, False])
    w = Wachter(lr=0.01)
    out = w.fit(X, np.zeros(3), h, immutable=imm).recourse(X)
    flip = (2 * X[:, 0] + 3 * X[:, 1] - 1) / 4
    np.testing.assert_array_equal(out[:, :2], X[:, :2])           # immutables untouched
    assert np.all(out[:, 2] < flip)                                 # crossed the boundary ...
    assert np.all(flip - out[:, 2] < 0.05)                          # ... and stopped right after
    assert w.n_failed_ == 0


def test_wachter_cost_is_at_least_the_min_l1_flip():
    # For a linear h the cheapest L1 move to the boundary changes only the
    # feature with the largest |w|: cost* = |logit(x)| / max|w|.
    w_vec = np.array([1.0, -2.0, 0.5])
    h = LinearH(w_vec, 0.2)
    X = np.array([[0.1, 0.8, 0.2], [0.3, 0.6, 0.1]], dtype=np.float32)
    out = Wachter().fit(X, np.zeros(2), h).recourse(X)
    logit = X @ w_vec + 0.2
    assert np.all(h.predict_proba(out) > 0.5)
    cost = np.abs(out - X).sum(axis=1)
    assert np.all(cost >= np.abs(logit) / np.abs(w_vec).max() - 1e-4)
    assert np.all(cost <= 3 * np.abs(logit) / np.abs(w_vec).max())  # Adam moves every feature


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wachter_invariants(seed):
    X, y, h, imm, cat = random_problem(seed, n=60)
    out = Wachter(n_iter=200).fit(X, y, h, immutable=imm, categorical=cat).recourse(X)
    np.testing.assert_array_equal(out[:, imm], X[:, imm])
    assert set(np.unique(out[:, cat])) <= {0.0, 1.0}
    assert out.min() >= 0 and out.max() <= 1
    again = Wachter(n_iter=200).fit(X, y, h, immutable=imm, categorical=cat).recourse(X)
    np.testing.assert_array_equal(out, again)
