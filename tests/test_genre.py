"""Tests for genre.py, each against something computed independently: brute-force
loops, hand-computed numbers, or a property the paper states."""

import math
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn.exceptions import NotFittedError

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import genre  # noqa: E402
from engine import Settings  # noqa: E402
from genre import (Bins, FeatureKind, GenRe, GenReConfig, Pairs, RecourseTransformer,  # noqa: E402
                   feature_value, jensen_loss, make_bins, pairing_distribution, sample_recourse, soft_labels,
                   training_sets)


class LinearH(nn.Module):
    """A fixed logistic classifier with the interface GenRe expects of h."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight = torch.tensor(weight, dtype=torch.float32)
        self.bias = float(bias)

    def forward(self, x):                                   # (B, D) -> logits (B,)
        return x @ self.weight + self.bias

    @torch.no_grad()
    def predict_proba(self, X):                             # numpy (N, D) -> P(y = 1 | x), (N,)
        return torch.sigmoid(self(torch.as_tensor(np.asarray(X), dtype=torch.float32))).numpy()


def tiny_config(**overrides):
    base = dict(d_model=16, n_heads=2, d_ff=16, n_enc_layers=1, n_dec_layers=1, n_bins=10,
                steps=20, batch_size=64, top_k=50)
    return GenReConfig(**{**base, **overrides})


def tiny(cfg=None, eval_every=10, **kw):
    """A GenRe with tiny_config() (or cfg) that checks the validation loss every eval_every steps."""
    return GenRe(cfg or tiny_config(), settings=Settings(eval_every=eval_every), **{"verbose": False, **kw})


def toy_data(n=300, seed=0):
    """D = 4: feature 0 immutable and binary, feature 1 a mutable binary
    categorical, features 2-3 continuous. h looks at features 1-3."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, 4)).astype(np.float32)
    X[:, :2] = (X[:, :2] > 0.5)
    h = LinearH([0.0, 2.0, 4.0, 4.0], -5.0)
    y = (rng.random(n) < h.predict_proba(X)).astype(int)
    immutable = np.array([True, False, False, False])
    categorical = np.array([True, True, False, False])
    return X, y, h, immutable, categorical


@pytest.fixture(scope="module")
def fitted():
    X, y, h, imm, cat = toy_data()
    model = tiny(random_state=0).fit(X, y, h, immutable=imm, categorical=cat)
    X_neg = X[h.predict_proba(X) <= 0.5][:25]
    return model, X, y, h, imm, cat, X_neg


# -- Eq. 6: the pairing distribution -----------------------------------------

def brute_force_q(Xs, Xd, lam, immutable):
    """Q(x+|x) by a double loop over sources and targets, in float64."""
    Q = np.zeros((len(Xs), len(Xd)))
    for i, x in enumerate(Xs):
        for t, xp in enumerate(Xd):
            breaks = np.any(x[immutable] != xp[immutable])
            Q[i, t] = 0.0 if breaks else math.exp(-lam * np.abs(x - xp).sum())
        Q[i] /= Q[i].sum()
    return Q


def dense(idx, prob, n_dst):
    Q = np.zeros((len(idx), n_dst))
    np.put_along_axis(Q, idx.long().numpy(), prob.numpy(), axis=1)
    return Q


def test_pairing_matches_brute_force():
    rng = np.random.default_rng(1)
    Xs, Xd = rng.random((6, 3)).astype(np.float32), rng.random((9, 3)).astype(np.float32)
    Xs[:, 0], Xd[:, 0] = Xs[:, 0] > 0.5, Xd[:, 0] > 0.5
    Xs[0, 0], Xd[0, 0] = 0.0, 0.0                       # every source group has a partner
    Xs[1, 0], Xd[1, 0] = 1.0, 1.0
    imm = np.array([True, False, False])
    idx, prob, keep = pairing_distribution(torch.from_numpy(Xs), torch.from_numpy(Xd), 2.0,
                                           torch.from_numpy(imm), top_k=100, chunk=4)
    assert keep.all()
    np.testing.assert_allclose(prob.sum(1).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(dense(idx, prob, 9), brute_force_q(Xs, Xd, 2.0, imm), atol=1e-6)


def test_pairing_top_k_is_the_renormalised_head_of_q():
    rng = np.random.default_rng(2)
    Xs, Xd = rng.random((5, 4)).astype(np.float32), rng.random((12, 4)).astype(np.float32)
    idx, prob, _ = pairing_distribution(torch.from_numpy(Xs), torch.from_numpy(Xd), 3.0,
                                        torch.zeros(4, dtype=torch.bool), top_k=4)
    Q = brute_force_q(Xs, Xd, 3.0, np.zeros(4, bool))
    for i in range(5):
        top = np.argsort(-Q[i])[:4]
        assert set(idx[i].tolist()) == set(top.tolist())
        expected = dict(zip(top.tolist(), Q[i, top] / Q[i, top].sum()))
        for t, p in zip(idx[i].tolist(), prob[i].tolist()):
            assert p == pytest.approx(expected[t], abs=1e-6)


def test_large_lambda_mode_is_nearest_neighbour():
    rng = np.random.default_rng(3)
    Xs, Xd = rng.random((20, 3)).astype(np.float32), rng.random((40, 3)).astype(np.float32)
    Xs[:, 0], Xd[:, 0] = Xs[:, 0] > 0.5, Xd[:, 0] > 0.5
    imm = np.array([True, False, False])
    idx, prob, keep = pairing_distribution(torch.from_numpy(Xs), torch.from_numpy(Xd), 1e4,
                                           torch.from_numpy(imm), top_k=10)
    mode = idx.gather(1, prob.argmax(1, keepdim=True)).squeeze(1).numpy()
    for i, x in enumerate(Xs[keep.numpy()]):
        cost = [np.abs(x - xp).sum() if xp[0] == x[0] else np.inf for xp in Xd]
        assert mode[i] == int(np.argmin(cost))
    assert prob.max(1).values.min() > 0.99


def test_training_sets_follow_section_4_1_row_by_row():
    rng = np.random.default_rng(7)
    y, p = rng.integers(0, 2, 200), rng.random(200)
    p[:4] = [0.5, 0.7, 0.5000001, 0.7000001]                # the boundaries: <= 0.5 and > gamma
    neg, pos = training_sets(y, p, 0.7)
    for yi, pi, n_i, p_i in zip(y, p, neg, pos):
        assert n_i == (yi == 0 and pi <= 0.5) and p_i == (yi == 1 and pi > 0.7)


def test_no_pair_breaks_an_immutable_and_orphans_are_dropped():
    rng = np.random.default_rng(4)
    Xs, Xd = rng.random((30, 3)).astype(np.float32), rng.random((30, 3)).astype(np.float32)
    Xs[:, 0] = rng.integers(0, 3, 30) / 2                   # groups 0, .5, 1 among sources ...
    Xd[:, 0] = rng.integers(0, 2, 30) / 2                   # ... but targets only 0 and .5
    Xs[:3, 0] = 1.0
    imm = torch.tensor([True, False, False])
    with pytest.warns(UserWarning, match="no target"):
        idx, prob, keep = pairing_distribution(torch.from_numpy(Xs), torch.from_numpy(Xd), 5.0, imm, 8)
    assert not keep[:3].any() and keep.numpy().tolist() == (Xs[:, 0] != 1.0).tolist()
    for x, row_idx, row_p in zip(Xs[keep.numpy()], idx, prob):
        partners = Xd[row_idx.long().numpy()][row_p.numpy() > 0]
        assert len(partners) > 0 and np.all(partners[:, 0] == x[0])


def test_drawn_partners_follow_q():
    Xs, Xd = torch.zeros(1, 2), torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    pairs = Pairs.from_q(Xs.expand(20000, 2), Xd, torch.tensor([[0, 1, 2]] * 20000, dtype=torch.int32),
                         torch.tensor([[0.5, 0.3, 0.2]]).expand(20000, 3))
    drawn = pairs.draw(torch.Generator().manual_seed(0))                 # (20000, 2)
    freq = [(drawn == Xd[t]).all(1).float().mean().item() for t in range(3)]
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2], atol=0.015)


# -- Eq. 7-8: bins, soft labels, loss -------------------------------------------

def test_soft_labels_sum_to_one_and_peak_at_the_bin_holding_the_value():
    rng = np.random.default_rng(5)
    X_pos = torch.from_numpy(rng.random((50, 3)).astype(np.float32))
    bins = make_bins(X_pos, 20)
    x = torch.from_numpy(rng.uniform(0.05, 0.95, (100, 3)).astype(np.float32))
    x = torch.minimum(torch.maximum(x, bins.lo), bins.hi - 1e-4)     # inside the bins
    s = soft_labels(x, bins)                                         # (100, 3, 20)
    np.testing.assert_allclose(s.sum(-1).numpy(), 1.0, atol=1e-5)
    holding = ((x - bins.lo) / bins.w).floor().long()               # bin k covers [lo + k w, lo + (k+1) w)
    assert torch.equal(s.argmax(-1), holding)


def test_bins_are_equal_width_centres_over_d_h_plus():
    bins = make_bins(torch.tensor([[0.2, 0.0], [0.6, 1.0]]), 4)
    np.testing.assert_allclose(bins.mu[0].numpy(), [0.25, 0.35, 0.45, 0.55], atol=1e-6)
    np.testing.assert_allclose(bins.w.numpy(), [0.1, 0.25], atol=1e-6)
    np.testing.assert_allclose(bins.hi.numpy(), [0.6, 1.0], atol=1e-6)


def test_jensen_loss_equals_hand_computed_cross_entropy():
    # one feature, three bins centred 0, 1, 2 with width 1; the value 0 ->
    # kernel exp(0), exp(-1/2), exp(-2), normalised
    k = np.exp([0.0, -0.5, -2.0])
    s_hand = k / k.sum()
    bins = Bins(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([1.0]), torch.tensor([-0.5]), torch.tensor([2.5]))
    s = soft_labels(torch.tensor([[0.0]]), bins)
    np.testing.assert_allclose(s[0, 0].numpy(), s_hand, rtol=1e-6)
    logits = torch.tensor([[[1.0, 2.0, 0.5]]])
    p = np.exp([1.0, 2.0, 0.5]) / np.exp([1.0, 2.0, 0.5]).sum()
    assert jensen_loss(logits, s).item() == pytest.approx(-(s_hand * np.log(p)).sum(), rel=1e-6)
    # summed over features, averaged over the batch
    logits2 = torch.randn(2, 3, 3)
    s2 = torch.softmax(torch.randn(2, 3, 3), -1)
    by_hand = -sum((s2[b, j] * torch.log_softmax(logits2[b, j], -1)).sum() for b in range(2) for j in range(3)) / 2
    assert jensen_loss(logits2, s2).item() == pytest.approx(by_hand.item(), rel=1e-5)


# -- Sec. 4.2: the transformer ----------------------------------------------------

def test_decoder_is_causal():
    torch.manual_seed(0)
    D = 5
    model = RecourseTransformer(D, tiny_config()).eval()
    x, x_plus = torch.rand(3, D), torch.rand(3, D)
    base = model(x, x_plus)                                          # (3, D, K)
    for j in range(D):
        changed = x_plus.clone()
        changed[:, j] += 0.5
        out = model(x, changed)
        assert torch.equal(out[:, :j + 1], base[:, :j + 1]), f"feature {j} leaked into positions <= {j}"
        if j + 1 < D:
            assert not torch.allclose(out[:, j + 1], base[:, j + 1])  # ... and it is used downstream


def test_attention_equals_the_textbook_formula():
    """MultiHeadAttention against softmax(q k^T / sqrt(E/H)) v written out head by head."""
    torch.manual_seed(0)
    attn = genre.MultiHeadAttention(8, 2, 0.0).eval()
    x, ctx = torch.randn(3, 4, 8), torch.randn(3, 5, 8)
    q = attn.query(x)
    k, v = attn.key_value(ctx).split(8, dim=-1)
    heads = []
    for hd in range(2):
        s = slice(4 * hd, 4 * hd + 4)
        w = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / 2.0, dim=-1)   # sqrt(8 / 2) = 2
        heads.append(w @ v[..., s])
    torch.testing.assert_close(attn(x, ctx), attn.out(torch.cat(heads, -1)), atol=1e-6, rtol=1e-5)


# -- Algorithms 1 and 2 -------------------------------------------------------------

def test_tiny_model_learns_a_single_fixed_pair():
    x = np.array([0.2, 0.3, 0.1], np.float32)
    target = np.array([0.7, 0.9, 0.4], np.float32)               # the nearest x+ in D_h^+
    other = np.array([1.0, 0.0, 1.0], np.float32)                # L1 0.6 farther: Q ~ e^-30
    X = np.stack([x] * 30 + [target] * 30 + [other] * 30)
    y = np.array([0] * 30 + [1] * 60)
    h = LinearH([20.0, 20.0, 20.0], -24.0)
    model = tiny(tiny_config(lam=50.0, n_bins=10, steps=150, lr=1e-2), eval_every=50, random_state=0).fit(X, y, h)
    S = model.sample(x[None], n=20, tau=100.0)[0]                 # (20, 3)
    mu, w, lo = model.bins_.mu.numpy(), model.bins_.w.numpy(), model.bins_.lo.numpy()
    target_bin = np.clip(np.floor((target - lo) / w), 0, 9).astype(int)
    expected = mu[np.arange(3), target_bin]
    np.testing.assert_allclose(S, np.broadcast_to(expected, S.shape), atol=1e-6)


def test_large_tau_samples_the_argmax_bins_centre(fitted):
    model, X, *_ = fitted
    X_neg = fitted[-1]
    S = model.sample(X_neg, n=1, tau=1e4)[:, 0]                   # (M, D)
    with torch.no_grad():
        logits = model.model_(torch.from_numpy(X_neg), torch.from_numpy(S))  # teacher-forced on S
    argmax_value = model.bins_.mu[torch.arange(4), logits.argmax(-1)].numpy()   # (M, D) Algorithm 2's value
    continuous = ~model.categorical_ & ~model.immutable_
    np.testing.assert_allclose(S[:, continuous], argmax_value[:, continuous], atol=1e-6)


def test_samples_are_bin_centres_round_categoricals_and_keep_immutables(fitted):
    model, X, y, h, imm, cat, X_neg = fitted
    X_neg = X_neg.copy()
    X_neg[:5, 0] = 0.3                                           # an immutable value never seen in training
    S = model.sample(X_neg, n=7, tau=1.0, sigma=0.05)            # (M, 7, D)
    assert S.shape == (len(X_neg), 7, 4) and S.dtype == np.float32
    assert np.isin(S[..., 1], [0.0, 1.0]).all()
    assert np.array_equal(S[..., 0], np.repeat(X_neg[:, :1], 7, axis=1))
    lo, hi = model.bins_.lo.numpy(), model.bins_.hi.numpy()
    lo, hi = np.minimum(lo, X_neg)[:, None], np.maximum(hi, X_neg)[:, None]
    assert (S[..., 2:] >= lo[..., 2:] - 1e-6).all() and (S[..., 2:] <= hi[..., 2:] + 1e-6).all()
    S = model.sample(X_neg, tau=1.0)                              # sigma = 0: Algorithm 2's bin centres
    mu = model.bins_.mu.numpy()                                  # (D, K)
    for j in (2, 3):
        assert np.isin(S[..., j], mu[j]).all()


def test_one_hot_groups_are_sampled_one_hot():
    rng = np.random.default_rng(6)
    X = rng.random((200, 5)).astype(np.float32)
    X[:, 2:] = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 200)]   # one categorical, three values
    h = LinearH([4.0, 4.0, 0.0, 1.0, -1.0], -4.0)
    y = (rng.random(200) < h.predict_proba(X)).astype(int)
    model = tiny(tiny_config(steps=5)).fit(X, y, h, groups=[np.array([2, 3, 4])])
    for tau in (0.1, 10.0):
        S = model.sample(X[:30], n=10, tau=tau)
        assert np.array_equal(S[..., 2:].sum(-1), np.ones((30, 10), np.float32))
        assert np.isin(S[..., 2:], [0.0, 1.0]).all()


def test_feature_value_rule_on_hand_computed_cases():
    D = 4
    bins = Bins(torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9]).repeat(D, 1), torch.full((D,), 0.2),
                torch.zeros(D), torch.ones(D))                  # five bins of width 0.2 on [0, 1]
    zero = torch.zeros(4)
    x = torch.tensor([[0.52, 0, 1, 0], [0.52, 0, 1, 0], [0.52, 0, 1, 0], [0.95, 0, 1, 0]])
    k = torch.tensor([2, 3, 4, 4])
    value = lambda kind, sigma=0.0, eps=zero, x=x, k=k, j=0, x_plus=torch.zeros(4, 4): \
        feature_value(j, k, x, x_plus, eps, bins, kind, sigma).tolist()
    plain = FeatureKind()
    np.testing.assert_allclose(value(plain), [0.5, 0.7, 0.9, 0.9], atol=1e-6)      # bin centres
    # noise, then the clamp to the bins' range [0, 1], widened to hold x_j = 1.3
    x_far = x.clone()
    x_far[3, 0] = 1.3
    eps = torch.tensor([1.0, -1.0, 2.0, 5.0])
    np.testing.assert_allclose(value(plain, 0.1, eps, x=x_far), [0.6, 0.6, 1.0, 1.3], atol=1e-6)
    # an immutable keeps x_j whatever was drawn; a binary categorical rounds its centre
    assert value(FeatureKind(immutable=True), 0.1, eps) == x[:, 0].tolist()
    assert value(FeatureKind(categorical=True), k=torch.tensor([2, 3, 1, 0])) == [1, 1, 0, 0]
    # a one-hot group [1, 2, 3]: the first member drawn as 1 keeps it, the last is 1 if none was
    drawn = torch.tensor([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)
    group = lambda before, last, k: value(FeatureKind(categorical=True, group_before=before, group_last=last),
                                          k=torch.tensor(k), j=before[-1] + 1 if before else 1, x_plus=drawn)
    assert group([], False, [3, 0, 0, 4]) == [1, 0, 0, 1]                    # first member: just rounded
    assert group([1], False, [4, 4, 0, 4]) == [0, 1, 0, 1]                   # row 0 already took member 1
    assert group([1, 2], True, [4, 4, 0, 0]) == [0, 0, 1, 1]                 # last: 1 iff none before


def test_algorithm_2_draws_bins_with_the_probabilities_of_the_tempered_softmax():
    """sample_recourse on a stub model whose logits are fixed: the frequency of each bin
    over many draws is softmax(tau * logits), for tau 1 and 3."""
    class Stub(nn.Module):
        def encode(self, x):
            return x[:, :, None]
        def decode(self, memory, x_prev):
            return torch.tensor([0.0, 1.0, 2.0]).expand(len(memory), x_prev.shape[1] + 1, 3)
    bins = Bins(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([1.0]), torch.tensor([-0.5]), torch.tensor([2.5]))
    n = 30000
    g = torch.Generator().manual_seed(0)
    for tau in (1.0, 3.0):
        u = 1.0 - torch.rand(n, 1, generator=g)
        S = sample_recourse(Stub(), torch.zeros(1, 1), n, u, torch.zeros(n, 1), bins, [FeatureKind()], tau, 0.0)
        freq = [(S[:, 0] == v).float().mean().item() for v in (0.0, 1.0, 2.0)]
        expected = torch.softmax(tau * torch.tensor([0.0, 1.0, 2.0]), 0).tolist()
        np.testing.assert_allclose(freq, expected, atol=0.01)


@pytest.mark.parametrize("sigma", [0.0, 0.05])
def test_a_rows_samples_do_not_depend_on_the_other_rows(fitted, sigma):
    model, *_, X_neg = fitted
    alone = model.sample(X_neg[:3], n=5, sigma=sigma)
    among = model.sample(X_neg, n=5, sigma=sigma)[:3]
    assert np.array_equal(alone, among)


def test_recourse_is_the_sample_h_rates_highest(fitted):
    model, X, y, h, *_, X_neg = fitted
    R = model.recourse(X_neg)                                    # (M, D), GenReConfig's select="h"
    S = model.sample(X_neg)                                      # (M, n, D), same randomness
    score = h.predict_proba(S.reshape(-1, 4)).reshape(len(X_neg), -1)
    assert np.array_equal(R, S[np.arange(len(X_neg)), score.argmax(1)])
    assert R.dtype == np.float32 and R.shape == X_neg.shape
    assert np.array_equal(model.recourse(X_neg), R)              # repeatable
    with pytest.raises(ValueError, match="select"):
        model.recourse(X_neg, select="cheapest")


def test_plausible_selection_is_h_best_among_lof_inliers(fitted):
    """select="plausible", recomputed by brute force: an LOF (5 neighbours) of the
    training rows with y = 1 marks each candidate; the highest h among the inliers
    is returned, or the highest h overall when a row has no inlier."""
    import copy
    from sklearn.neighbors import LocalOutlierFactor
    model, X, y, h, *_, X_neg = fitted
    R = model.recourse(X_neg, tau=0.1, sigma=0.5, select="plausible")   # (M, D); broad samples,
    S = model.sample(X_neg, tau=0.1, sigma=0.5)                  # (M, n, D) so some are outliers
    M, n, D = S.shape
    lof = LocalOutlierFactor(n_neighbors=5, novelty=True).fit(X[y == 1])
    inlier = lof.predict(S.reshape(-1, D)).reshape(M, n) == 1
    p = h.predict_proba(S.reshape(-1, D)).reshape(M, n)
    assert (inlier.any(1) & ~inlier.all(1)).sum() >= 5           # rows where the filter matters
    for i in range(M):
        pool = np.flatnonzero(inlier[i]) if inlier[i].any() else np.arange(n)
        assert np.array_equal(R[i], S[i, pool[p[i, pool].argmax()]])

    class NoInliers:                                             # every candidate an outlier:
        def predict(self, Z):                                    # the rule falls back to h's
            return -np.ones(len(Z), dtype=int)
    blind = copy.copy(model)
    blind.plausibility_lof_ = NoInliers()
    assert np.array_equal(blind.recourse(X_neg, select="plausible"), model.recourse(X_neg, select="h"))


def test_same_seed_same_fit_same_samples():
    X, y, h, imm, cat = toy_data(200, seed=1)
    fit = lambda seed: tiny(tiny_config(steps=8), random_state=seed).fit(X, y, h, immutable=imm, categorical=cat)
    a, b, c = fit(3), fit(3), fit(4)
    for (k, va), vb in zip(a.model_.state_dict().items(), b.model_.state_dict().values()):
        assert torch.equal(va, vb), k
    assert np.array_equal(a.sample(X[:20]), b.sample(X[:20]))
    assert not np.array_equal(a.sample(X[:20]), c.sample(X[:20]))
    assert a.fit_seconds_ > 0


def test_budget_is_epochs_capped_at_feature_steps_over_d():
    """cfg.epochs epochs of ceil(n / batch) steps, but at most feature_steps / D steps."""
    X, y, h, imm, cat = toy_data(300, seed=2)
    n_neg = int(((y == 0) & (h.predict_proba(X) <= 0.5)).sum())
    n_train = n_neg - int(round(0.1 * n_neg))                        # the validation split's rest
    per_epoch = math.ceil(n_train / 64)                              # tiny_config's batch
    assert per_epoch >= 2                                            # so that 3 epochs > 5 steps
    for feature_steps, expected in [(None, 3 * per_epoch), (10_000, 3 * per_epoch), (5 * 4, 5)]:
        cfg = tiny_config(steps=None, epochs=3, feature_steps=feature_steps)
        model = tiny(cfg, eval_every=1).fit(X, y, h, immutable=imm, categorical=cat)
        assert model.history_[-1]["step"] == expected


def test_the_kept_parameters_are_those_of_the_lowest_validation_loss(monkeypatch):
    """Algorithm 1 keeps the best checkpoint: with the validation loss replaced by a script
    whose minimum is at the second check, the fitted weights are those of that step."""
    X, y, h, *_ = toy_data()
    script, states = iter([5.0, 1.0, 3.0, 2.0]), []
    monkeypatch.setattr(genre, "validation_loss", lambda model, *a: states.append(
        {k: v.clone() for k, v in model.state_dict().items()}) or next(script))
    model = tiny(tiny_config(steps=8), eval_every=2).fit(X, y, h)
    assert [r["val_loss"] for r in model.history_] == [5.0, 1.0, 3.0, 2.0]
    for k, v in model.model_.state_dict().items():
        assert torch.equal(v, states[1][k]), k


def test_training_that_diverges_says_so():
    X, y, h, *_ = toy_data()
    with pytest.raises(ValueError, match="training diverged.*lower lr"):
        tiny(tiny_config(lr=1e30, steps=3), eval_every=1).fit(X, y, h)


# -- The estimator's contract ---------------------------------------------------------

def test_unfitted_model_raises_not_fitted():
    with pytest.raises(NotFittedError, match="not fitted"):
        GenRe(tiny_config()).recourse(np.zeros((2, 4), np.float32))
    with pytest.raises(NotFittedError):
        GenRe(tiny_config()).sample(np.zeros((2, 4), np.float32))


def test_bad_inputs_raise_value_error(fitted):
    model, X, y, h, imm, cat, X_neg = fitted
    with pytest.raises(ValueError, match="3 features, the model was fitted on 4"):
        model.sample(X_neg[:, :3])
    bad = X_neg.copy()
    bad[0, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.recourse(bad)
    with pytest.raises(ValueError, match="NaN"):
        tiny().fit(np.where(np.arange(4) == 2, np.nan, X), y, h)
    with pytest.raises(ValueError, match="D_h\\^\\+ is empty.*lower gamma"):
        tiny(tiny_config(gamma=0.999999)).fit(X, y, h)
    with pytest.raises(ValueError, match="D_h\\^- is empty"):
        tiny().fit(X, np.ones_like(y), h)
    with pytest.raises(ValueError, match="immutable"):
        tiny().fit(X, y, h, immutable=np.ones(3, bool))
    with pytest.raises(ValueError, match="only the labels 0 and 1"):
        tiny().fit(X, y * 2, h)
    with pytest.raises(ValueError, match="one-hot group 0 names feature 4, outside 0 ... 3"):
        tiny().fit(X, y, h, groups=[[2, 4]])
    with pytest.raises(ValueError, match="h.predict_proba failed on X with 4 features"):
        tiny().fit(X, y, LinearH([1.0, 1.0, 1.0], 0.0))                  # h of the wrong width
    two_columns = type("H2", (), {"predict_proba": lambda self, Z: np.stack([1 - h.predict_proba(Z),
                                                                              h.predict_proba(Z)], 1)})()
    with pytest.raises(ValueError, match="returns \\[:, 1\\]"):
        tiny().fit(X, y, two_columns)


def test_the_default_is_the_papers_method_and_the_preset_adds_tau_5_and_plausibility():
    cfg = GenReConfig()
    assert (cfg.lam, cfg.gamma, cfg.top_k, cfg.n_bins, cfg.d_model, cfg.d_ff) == (5.0, 0.7, 1000, 50, 32, 32)
    assert (cfg.tau, cfg.sigma, cfg.n_samples, cfg.select, cfg.epochs) == (10.0, 0.0, 10, "h", 2000)
    preset = GenReConfig.plausible()
    assert (preset.tau, preset.select) == (5.0, "plausible")
    assert {k: v for k, v in vars(preset).items() if k not in ("tau", "select")} == \
        {k: v for k, v in vars(cfg).items() if k not in ("tau", "select")}
    paper = GenReConfig.paper_sizes()
    assert (paper.n_enc_layers, paper.n_dec_layers, paper.n_heads, paper.dropout) == (16, 16, 8, 0.1)
    assert (paper.lr, paper.batch_size, paper.epochs, paper.feature_steps) == (1e-4, 2048, 2000, None)
    assert GenReConfig.paper_sizes(batch_size=16384).batch_size == 16384


@pytest.mark.parametrize("setting, message", [
    (dict(select="best"), "GenReConfig.select must be one of ('h', 'plausible'), got 'best'"),
    (dict(lam=float("nan")), "GenReConfig.lam must be at least 0, got nan"),
    (dict(lam=float("inf")), "GenReConfig.lam must be a finite number, got inf"),
    (dict(steps=0), "GenReConfig.steps must be at least 1, got 0"),
    (dict(n_bins=1), "GenReConfig.n_bins must be at least 2, got 1"),
    (dict(tau=-1.0), "GenReConfig.tau must be a positive number, got -1.0"),
    (dict(gamma=1.0), "GenReConfig.gamma must be below 1, got 1.0"),
    (dict(gamma=0.3), "GenReConfig.gamma must be at least 0.5, got 0.3"),
    (dict(d_model=30, n_heads=4), "GenReConfig.d_model (30) must be a multiple of n_heads (4)"),
])
def test_config_refuses_bad_settings_before_training(setting, message):
    with pytest.raises(ValueError) as err:
        GenReConfig(**setting)
    assert str(err.value).startswith(message)
    GenReConfig(steps=None, feature_steps=None, lam=0.0, sigma=0.0)   # the edges that are allowed
