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
from genre import (PAPER_SAMPLING, Bins, FeatureRole, GenRe, GenReConfig, Pairs,  # noqa: E402
                   RecourseTransformer, feature_value, jensen_loss, make_bins, make_pairs,
                   pairing_distribution, snap_to_observed, soft_labels, training_sets)


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
                steps=20, eval_every=10, batch_size=64, warmup_steps=0, top_k=50)
    return GenReConfig(**{**base, **overrides})


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
    model = GenRe(tiny_config(), random_state=0, verbose=False).fit(X, y, h, immutable=imm, categorical=cat)
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


@pytest.mark.parametrize("negatives", ["paper", "code"])
def test_training_sets_follow_section_4_1_row_by_row(negatives):
    rng = np.random.default_rng(7)
    y, p = rng.integers(0, 2, 200), rng.random(200)
    p[:4] = [0.5, 0.7, 0.5000001, 0.7000001]                # the boundaries: <= 0.5 and > gamma
    neg, pos = training_sets(y, p, 0.7, negatives)
    for yi, pi, n_i, p_i in zip(y, p, neg, pos):
        in_neg = (yi == 0 and pi <= 0.5) if negatives == "paper" else pi <= 0.7
        assert n_i == in_neg and p_i == (yi == 1 and pi > 0.7)
    with pytest.raises(ValueError, match="negatives must be"):
        training_sets(y, p, 0.7, "other")


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


def test_prefiltered_pairs_equal_the_exact_ones_on_small_data():
    """cfg.pairing="prefilter" goes through pairing.prefiltered_pairing, whose candidate
    pool (2048) covers all 40 targets here, so it must give exactly Q."""
    rng = np.random.default_rng(9)
    Xs, Xd = torch.from_numpy(rng.random((30, 3)).astype(np.float32)), torch.from_numpy(rng.random((40, 3)).astype(np.float32))
    Xs[:, 0], Xd[:, 0] = (Xs[:, 0] > 0.5).float(), (Xd[:, 0] > 0.5).float()
    imm = torch.tensor([True, False, False])
    q = {}
    for pairing in ("exact", "prefilter"):
        pairs = make_pairs(Xs, Xd, tiny_config(pairing=pairing, top_k=10), imm, "cpu")
        prob = torch.diff(pairs.cdf, dim=1, prepend=torch.zeros(len(pairs.cdf), 1))
        q[pairing] = dense(pairs.idx, prob, 40)
        assert pairs.idx.dtype == torch.int32 and pairs.cdf.dtype == torch.float32
    np.testing.assert_allclose(q["prefilter"], q["exact"], atol=1e-6)



def test_auto_pairing_is_exact_up_to_exact_costs_and_prefiltered_beyond(monkeypatch):
    import pairing
    calls = []
    spy = lambda *a, **k: calls.append(len(a[0]) * len(a[1])) or pairing_distribution(*a[:5])
    monkeypatch.setattr(pairing, "prefiltered_pairing", spy)
    Xs, Xd, imm = torch.rand(30, 3), torch.rand(40, 3), torch.zeros(3, dtype=torch.bool)
    monkeypatch.setattr(genre, "EXACT_COSTS", 30 * 40)
    make_pairs(Xs, Xd, tiny_config(pairing="auto", top_k=10), imm, "cpu")
    assert calls == []                                                    # 1,200 costs: exact
    monkeypatch.setattr(genre, "EXACT_COSTS", 30 * 40 - 1)
    make_pairs(Xs, Xd, tiny_config(pairing="auto", top_k=10), imm, "cpu")
    assert calls == [30 * 40]                                             # one more than allowed: prefilter


def test_max_sources_pairs_a_uniform_subsample_and_changes_nothing_when_not_reached():
    """Q is built for max_sources rows of D_h^- (train + validation), distinct rows of it;
    a cap at or above |D_h^-| gives the same pairs as no cap (the same random draws)."""
    X_neg, X_pos = torch.rand(200, 3), torch.rand(50, 3)
    imm = torch.zeros(3, dtype=torch.bool)

    def pairs(max_sources):
        model = GenRe(tiny_config(max_sources=max_sources))
        model.cfg_, model.device_ = model.cfg, "cpu"
        return model._split_pairs(X_neg, X_pos, imm, np.random.default_rng(0))

    capped = pairs(30)
    sources = torch.cat([capped[0].x, capped[1].x])                       # (30, D)
    assert len(sources) == 30 and len(torch.unique(sources, dim=0)) == 30
    assert all((X_neg == s).all(1).any() for s in sources)                # rows of D_h^-
    for a, b in zip(pairs(None), pairs(200)):
        assert torch.equal(a.x, b.x) and torch.equal(a.idx, b.idx) and torch.equal(a.cdf, b.cdf)


def test_the_plausibility_lof_sees_a_uniform_subsample_of_the_positives_only_beyond_lof_rows():
    X = np.arange(60, dtype=np.float32).reshape(30, 2)
    assert genre.subsample_rows(X, None, 0) is X and genre.subsample_rows(X, 30, 0) is X
    sub = genre.subsample_rows(X, 10, 0)
    assert len(sub) == 10 and len(np.unique(sub[:, 0])) == 10 and np.isin(sub[:, 0], X[:, 0]).all()
    assert np.array_equal(sub, genre.subsample_rows(X, 10, 0))               # the seed fixes it

# -- Eq. 7-8: bins, soft labels, loss -------------------------------------------

@pytest.mark.parametrize("mode", ["paper", "code"])
def test_soft_labels_sum_to_one_and_peak_at_the_value_bin(mode):
    rng = np.random.default_rng(5)
    X_pos = torch.from_numpy(rng.random((50, 3)).astype(np.float32))
    mu, w, lo, hi = make_bins(X_pos, 20, mode)
    x = torch.from_numpy(rng.uniform(0.05, 0.95, (100, 3)).astype(np.float32))
    x = torch.minimum(torch.maximum(x, lo), hi - 1e-4)              # inside the bins
    s = soft_labels(x, mu, w)                                        # (100, 3, 20)
    np.testing.assert_allclose(s.sum(-1).numpy(), 1.0, atol=1e-5)
    if mode == "paper":   # bin k covers [lo + k w, lo + (k+1) w); its centre is nearest
        holding = ((x - lo) / w).floor().long()
    else:                 # code: bin k's value is its left edge, the nearest of the edges
        holding = ((x - lo) / w).round().long().clamp(max=19)
    assert torch.equal(s.argmax(-1), holding)


def test_paper_bins_are_equal_width_centres_over_d_h_plus():
    X_pos = torch.tensor([[0.2, 0.0], [0.6, 1.0]])
    mu, w, lo, hi = make_bins(X_pos, 4, "paper")
    np.testing.assert_allclose(mu[0].numpy(), [0.25, 0.35, 0.45, 0.55], atol=1e-6)
    np.testing.assert_allclose(w.numpy(), [0.1, 0.25], atol=1e-6)
    np.testing.assert_allclose(hi.numpy(), [0.6, 1.0], atol=1e-6)
    mu, w, _, _ = make_bins(X_pos, 50, "code")
    np.testing.assert_allclose(mu[1, :3].numpy(), [0.0, 0.02, 0.04], atol=1e-7)


def test_snapped_bins_sample_observed_values():
    X_pos = torch.tensor([[0.0], [0.1], [0.1], [0.55], [1.0]])
    mu, w, lo, hi = make_bins(X_pos, 5, "paper")                    # centres .1 .3 .5 .7 .9
    values = snap_to_observed(mu, X_pos)
    np.testing.assert_allclose(values[0].numpy(), [0.1, 0.1, 0.55, 0.55, 1.0])


def test_jensen_loss_equals_hand_computed_cross_entropy():
    # one feature, three bins centred 0, 1, 2 with width 1; the value 0 ->
    # kernel exp(0), exp(-1/2), exp(-2), normalised
    k = np.exp([0.0, -0.5, -2.0])
    s_hand = k / k.sum()
    s = soft_labels(torch.tensor([[0.0]]), torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([1.0]))
    np.testing.assert_allclose(s[0, 0].numpy(), s_hand, rtol=1e-6)
    logits = torch.tensor([[[1.0, 2.0, 0.5]]])
    p = np.exp([1.0, 2.0, 0.5]) / np.exp([1.0, 2.0, 0.5]).sum()
    assert jensen_loss(logits, s).item() == pytest.approx(-(s_hand * np.log(p)).sum(), rel=1e-6)
    # summed over features, averaged over the batch
    logits2 = torch.randn(2, 3, 3)
    s2 = torch.softmax(torch.randn(2, 3, 3), -1)
    by_hand = -sum((s2[b, j] * torch.log_softmax(logits2[b, j], -1)).sum() for b in range(2) for j in range(3)) / 2
    assert jensen_loss(logits2, s2).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_validation_loss_is_the_mean_of_eq_8_over_pairs_whatever_the_batch():
    torch.manual_seed(0)
    D, K, N = 3, 10, 37
    model = genre.RecourseTransformer(D, tiny_config(n_bins=K)).eval()
    x, x_plus = torch.rand(N, D), torch.rand(N, D)
    mu, w = torch.linspace(0, 1, K).repeat(D, 1), torch.full((D,), 1 / K)
    with torch.no_grad():                                   # one pair at a time, by hand
        per_pair = [jensen_loss(model(x[i:i + 1], x_plus[i:i + 1]), soft_labels(x_plus[i:i + 1], mu, w)).item()
                    for i in range(N)]
    for batch in (1, 5, 16, N, 4096):                       # uneven last batches included
        assert genre.validation_loss(model, x, x_plus, mu, w, "cpu", batch=batch) == pytest.approx(
            np.mean(per_pair), rel=1e-5)


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


@pytest.mark.parametrize("n_heads", [1, 2])                  # the CPU default has 1, the tiny config 2
def test_cached_decode_step_matches_full_decoder(n_heads):
    torch.manual_seed(0)
    D = 6
    model = RecourseTransformer(D, tiny_config(n_heads=n_heads)).eval()
    x, x_plus = torch.rand(4, D), torch.rand(4 * 3, D)
    with torch.no_grad():
        memory = model.encode(x)
        full = model.decode(memory.repeat_interleave(3, 0), x_plus[:, :-1])  # (12, D, K)
        caches = model.start_cache(memory, 3)
        for j in range(D):
            step = model.decode_step(caches, x_plus[:, j - 1], j)
            torch.testing.assert_close(step, full[:, j], atol=1e-5, rtol=1e-5)


# -- Algorithms 1 and 2 -------------------------------------------------------------

def test_tiny_model_learns_a_single_fixed_pair():
    x = np.array([0.2, 0.3, 0.1], np.float32)
    target = np.array([0.7, 0.9, 0.4], np.float32)               # the nearest x+ in D_h^+
    other = np.array([1.0, 0.0, 1.0], np.float32)                # L1 0.6 farther: Q ~ e^-30
    X = np.stack([x] * 30 + [target] * 30 + [other] * 30)
    y = np.array([0] * 30 + [1] * 60)
    h = LinearH([20.0, 20.0, 20.0], -24.0)
    cfg = tiny_config(lam=50.0, n_bins=10, steps=150, lr=1e-2, eval_every=50, snap=False)
    model = GenRe(cfg, random_state=0, verbose=False).fit(X, y, h)
    S = model.sample(x[None], n=20, tau=100.0)[0]                 # (20, 3)
    mu, w, lo = model.bins_.mu.numpy(), model.bins_.w.numpy(), model.bins_.lo.numpy()
    target_bin = np.clip(np.floor((target - lo) / w), 0, 9).astype(int)
    expected = mu[np.arange(3), target_bin]
    np.testing.assert_allclose(S, np.broadcast_to(expected, S.shape), atol=1e-6)


@pytest.mark.parametrize("snap", [False, True])
def test_large_tau_samples_the_argmax_bin(fitted, snap):
    model, X, *_ = fitted
    X_neg = fitted[-1]
    S = model.sample(X_neg, n=1, tau=1e4, snap=snap)[:, 0]         # (M, D)
    with torch.no_grad():
        logits = model.model_(torch.from_numpy(X_neg), torch.from_numpy(S))  # teacher-forced on S
    k = logits.argmax(-1)                                         # (M, D) the arg-max bins
    if snap:                                                      # observed value, or x_j in its own bin
        argmax_value = model.bins_.observed[torch.arange(4), k]
        argmax_value = torch.where(k == model.bins_.index(torch.from_numpy(X_neg)),
                                   torch.from_numpy(X_neg), argmax_value).numpy()   # (M, D)
    else:                                                         # the bin's centre (Algorithm 2)
        argmax_value = model.bins_.mu[torch.arange(4), k].numpy()
    continuous = ~model.categorical_ & ~model.immutable_
    np.testing.assert_allclose(S[:, continuous], argmax_value[:, continuous], atol=1e-6)


def test_samples_project_categoricals_and_keep_immutables(fitted):
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
    S = model.sample(X_neg, n=7, tau=1.0, snap=True)             # sigma = 0: x's value or one seen in D_h^+
    X_pos = X[(y == 1) & (h.predict_proba(X) > 0.7)]
    for j in (2, 3):
        own = S[..., j] == X_neg[:, None, j]
        assert np.isin(S[..., j][~own], X_pos[:, j]).all()
        assert own.any() and (~own).any()


def test_one_hot_groups_are_sampled_one_hot():
    rng = np.random.default_rng(6)
    X = rng.random((200, 5)).astype(np.float32)
    X[:, 2:] = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 200)]   # one categorical, three values
    h = LinearH([4.0, 4.0, 0.0, 1.0, -1.0], -4.0)
    y = (rng.random(200) < h.predict_proba(X)).astype(int)
    model = GenRe(tiny_config(steps=5), verbose=False).fit(X, y, h, groups=[np.array([2, 3, 4])])
    for tau in (0.1, 10.0):
        S = model.sample(X[:30], n=10, tau=tau)
        assert np.array_equal(S[..., 2:].sum(-1), np.ones((30, 10), np.float32))
        assert np.isin(S[..., 2:], [0.0, 1.0]).all()


def hand_bins(D):
    """Five bins of width 0.2 on [0, 1] per feature, centres .1 .3 .5 .7 .9; feature 0's
    observed D_h^+ values nearest those centres are .1 .1 .55 .55 1."""
    mu = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9]).repeat(D, 1)                    # (D, 5)
    observed = mu.clone()
    observed[0] = torch.tensor([0.1, 0.1, 0.55, 0.55, 1.0])
    return Bins(mu, torch.full((D,), 0.2), torch.zeros(D), torch.ones(D), observed)


def test_feature_value_rule_on_hand_computed_cases():
    bins, zero = hand_bins(4), torch.zeros(4)
    x = torch.tensor([[0.52, 0, 1, 0], [0.52, 0, 1, 0], [0.52, 0, 1, 0], [0.95, 0, 1, 0]])
    k = torch.tensor([2, 3, 4, 4])
    value = lambda role, sigma=0.0, eps=zero, snap=True, x=x, k=k, j=0, x_plus=torch.zeros(4, 4): \
        feature_value(j, k, x, x_plus, eps, bins, role, sigma, snap).tolist()
    plain = FeatureRole()
    # bin centres (Algorithm 2); with snap: x_j if the drawn bin holds it, else the observed value
    np.testing.assert_allclose(value(plain, snap=False), [0.5, 0.7, 0.9, 0.9], atol=1e-6)
    np.testing.assert_allclose(value(plain), [0.52, 0.55, 1.0, 0.95], atol=1e-6)
    # noise, then the clamp to the bins' range [0, 1], widened to hold x_j = 1.3
    x_far = x.clone()
    x_far[3, 0] = 1.3
    eps = torch.tensor([1.0, -1.0, 2.0, 5.0])
    np.testing.assert_allclose(value(plain, 0.1, eps, snap=False, x=x_far), [0.6, 0.6, 1.0, 1.3], atol=1e-6)
    # a value outside the bins' range [0, 1] is in no bin: it is not kept, even from the edge bin
    x_out = torch.tensor([[-0.3, 0, 0, 0], [1.5, 0, 0, 0], [1.0, 0, 0, 0], [0.0, 0, 0, 0]])
    np.testing.assert_allclose(value(plain, x=x_out, k=torch.tensor([0, 4, 4, 0])), [0.1, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(bins.index(x_out), [[-1, 0, 0, 0], [-1, 0, 0, 0], [4, 0, 0, 0], [0, 0, 0, 0]])
    # an immutable keeps x_j whatever was drawn; a binary categorical rounds its centre
    assert value(FeatureRole(immutable=True), 0.1, eps) == x[:, 0].tolist()
    assert value(FeatureRole(categorical=True), snap=False, k=torch.tensor([2, 3, 1, 0])) == [1, 1, 0, 0]
    # a one-hot group [1, 2, 3]: the first member drawn as 1 keeps it, the last is 1 if none was
    drawn = torch.tensor([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)
    group = lambda before, last, k: value(FeatureRole(categorical=True, group_before=before, group_last=last),
                                          snap=False, k=torch.tensor(k), j=before[-1] + 1 if before else 1,
                                          x_plus=drawn)
    assert group([], False, [3, 0, 0, 4]) == [1, 0, 0, 1]                    # first member: just rounded
    assert group([1], False, [4, 4, 0, 4]) == [0, 1, 0, 1]                   # row 0 already took member 1
    assert group([1, 2], True, [4, 4, 0, 0]) == [0, 0, 1, 1]                 # last: 1 iff none before


def test_a_feature_constant_in_d_h_plus_moves_to_its_value():
    """Every bin of a feature that D_h^+ holds at one value snaps to that value, so a
    sample must take it: no x_j outside the bins is kept as its own bin's value."""
    rng = np.random.default_rng(8)
    X = rng.random((300, 3)).astype(np.float32)
    h = LinearH([4.0, 4.0, 0.0], -4.0)
    y = (rng.random(300) < h.predict_proba(X)).astype(int)
    X[:, 2] = np.where(y == 1, 0.8, rng.random(300) * 0.5)          # x_2 = 0.8 throughout D_h^+
    model = GenRe(tiny_config(), verbose=False).fit(X, y, h)
    S = model.sample(X[y == 0][:30], n=20, tau=1.0, snap=True)      # (30, 20, 3), broad draws
    np.testing.assert_array_equal(S[..., 2], np.float32(0.8))


def test_snap_false_samples_bin_centres_as_algorithm_2(fitted):
    model, *_, X_neg = fitted
    S = model.sample(X_neg, tau=1.0, snap=False)                    # (M, n, D), sigma = 0
    mu = model.bins_.mu.numpy()                                     # (D, K)
    for j in np.flatnonzero(~model.categorical_ & ~model.immutable_):
        assert np.isin(S[..., j], mu[j]).all()
        assert not np.isin(S[..., j], X_neg[:, j]).all()            # x_j is not kept as such
    R = model.recourse(X_neg, **PAPER_SAMPLING)
    assert PAPER_SAMPLING == dict(tau=10.0, sigma=0.0, snap=False, select="h")
    assert np.array_equal(R, model.recourse(X_neg, tau=10.0, snap=False, select="h"))
    assert np.isin(R[:, 2], mu[2]).all()


@pytest.mark.parametrize("sigma", [0.0, 0.05])
def test_a_rows_samples_do_not_depend_on_the_other_rows(fitted, sigma):
    model, *_, X_neg = fitted
    alone = model.sample(X_neg[:3], n=5, sigma=sigma)
    among = model.sample(X_neg, n=5, sigma=sigma)[:3]
    assert np.array_equal(alone, among)


def test_training_that_diverges_says_so():
    X, y, h, *_ = toy_data()
    with pytest.raises(ValueError, match="training diverged.*lower lr"):
        GenRe(tiny_config(lr=1e30, steps=3, eval_every=1), verbose=False).fit(X, y, h)


def test_without_a_validation_split_the_best_training_loss_is_kept():
    X, y, h, *_ = toy_data()
    with pytest.warns(UserWarning, match="lowest training-batch loss"):
        model = GenRe(tiny_config(steps=6, eval_every=2), verbose=False).fit(X[:20], y[:20], h)
    assert [r["val_loss"] for r in model.history_] == [r["train_loss"] for r in model.history_]


def test_save_can_leave_out_the_training_positives(fitted, tmp_path):
    model, X, y, h, *_, X_neg = fitted
    model.save(tmp_path / "with.pt")
    model.save(tmp_path / "without.pt", include_positives=False)
    assert np.array_equal(torch.load(tmp_path / "with.pt", weights_only=True)["positives"].numpy(), X[y == 1])
    again = GenRe.load(tmp_path / "without.pt", h=h)
    assert torch.load(tmp_path / "without.pt", weights_only=True)["positives"] is None
    assert np.array_equal(again.recourse(X_neg, select="h"), model.recourse(X_neg, select="h"))
    with pytest.raises(ValueError, match="saved without \\(include_positives=False\\)"):
        again.recourse(X_neg, select="plausible")


def test_cached_path_gives_exactly_the_plain_paths_samples(fitted):
    model, *_, X_neg = fitted
    for tau, sigma in [(10.0, 0.0), (1.0, 0.01)]:
        fast = model.sample(X_neg, n=5, tau=tau, sigma=sigma, cached=True)
        plain = model.sample(X_neg, n=5, tau=tau, sigma=sigma, cached=False)
        assert np.array_equal(fast, plain)


def test_recourse_is_the_sample_h_rates_highest(fitted):
    model, X, y, h, *_, X_neg = fitted
    R = model.recourse(X_neg, select="h")                        # (M, D)
    S = model.sample(X_neg)                                      # (M, n, D), same randomness
    score = h.predict_proba(S.reshape(-1, 4)).reshape(len(X_neg), -1)
    assert np.array_equal(R, S[np.arange(len(X_neg)), score.argmax(1)])
    assert R.dtype == np.float32 and R.shape == X_neg.shape
    assert np.array_equal(model.recourse(X_neg, select="h"), R)  # repeatable


def test_density_selection_maximises_h_times_the_models_density(fitted):
    model, X, y, h, *_, X_neg = fitted
    R = model.recourse(X_neg, select="density")                  # (M, D)
    S = model.sample(X_neg)                                      # (M, n, D), same randomness
    M, n, D = S.shape
    log_r = model.log_density(np.repeat(X_neg, n, axis=0), S.reshape(-1, D)).reshape(M, n)
    objective = np.log(h.predict_proba(S.reshape(-1, D)).reshape(M, n)) + log_r
    assert np.array_equal(R, S[np.arange(M), objective.argmax(1)])
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
    blind.lof_ = NoInliers()
    assert np.array_equal(blind.recourse(X_neg, select="plausible"), model.recourse(X_neg, select="h"))


def test_log_density_integrates_to_one():
    """R_theta(x+ | x) is a density over x+: on a 2-feature model its integral over
    a fine grid is 1, which checks the kernel mixture, its normalisation and the
    autoregressive product (feature 1's density depends on x+_0)."""
    rng = np.random.default_rng(1)
    X = rng.random((200, 2)).astype(np.float32)
    h = LinearH([3.0, 3.0], -3.0)
    y = (rng.random(200) < h.predict_proba(X)).astype(int)
    model = GenRe(tiny_config(n_bins=8), random_state=0, verbose=False).fit(X, y, h)
    lo = model.bins_.lo.numpy() - 6 * model.bins_.w.numpy()       # the kernels' tails are
    hi = model.bins_.hi.numpy() + 6 * model.bins_.w.numpy()       # negligible 6 widths out
    g0, g1 = (np.linspace(lo[j], hi[j], 201, dtype=np.float32) for j in range(2))
    grid = np.stack(np.meshgrid(g0, g1, indexing="ij"), -1).reshape(-1, 2)   # (201^2, 2)
    for x in X[:2]:
        density = np.exp(model.log_density(np.repeat(x[None], len(grid), 0), grid)).reshape(201, 201)
        integral = np.trapezoid(np.trapezoid(density, g1, axis=1), g0)
        assert integral == pytest.approx(1.0, abs=2e-3)


def test_save_and_load_give_identical_samples(fitted, tmp_path):
    model, X, y, h, *_, X_neg = fitted
    path = tmp_path / "genre.pt"
    model.save(path)
    again = GenRe.load(path, h=h)
    assert np.array_equal(again.sample(X_neg), model.sample(X_neg))
    assert np.array_equal(again.recourse(X_neg), model.recourse(X_neg))
    assert np.array_equal(again.recourse(X_neg, select="plausible"), model.recourse(X_neg, select="plausible"))
    torch.load(path, weights_only=True)                          # plain tensors and dicts only


def test_same_seed_same_fit_same_samples():
    X, y, h, imm, cat = toy_data(200, seed=1)
    fit = lambda seed: GenRe(tiny_config(steps=8), random_state=seed, verbose=False).fit(
        X, y, h, immutable=imm, categorical=cat)
    a, b, c = fit(3), fit(3), fit(4)
    for (k, va), vb in zip(a.model_.state_dict().items(), b.model_.state_dict().values()):
        assert torch.equal(va, vb), k
    assert np.array_equal(a.sample(X[:20]), b.sample(X[:20]))
    assert not np.array_equal(a.sample(X[:20]), c.sample(X[:20]))
    assert a.fit_seconds_ > 0


def test_validation_split_keeps_sources_apart():
    X, y, h, imm, cat = toy_data(300, seed=2)
    for val_targets in ("train", "heldout"):
        model = GenRe(tiny_config(steps=10, eval_every=5, val_targets=val_targets), verbose=False).fit(
            X, y, h, immutable=imm, categorical=cat)
        assert len(model.history_) == 2 and all(np.isfinite(r["val_loss"]) for r in model.history_)
    with pytest.raises(ValueError, match="val_targets"):
        GenRe(tiny_config(val_targets="test"), verbose=False).fit(X, y, h)


def test_budget_is_epochs_capped_at_feature_steps_over_d():
    """cfg.epochs epochs of ceil(n / batch) steps, but at most feature_steps / D steps."""
    X, y, h, imm, cat = toy_data(300, seed=2)
    n_neg = int(((y == 0) & (h.predict_proba(X) <= 0.5)).sum())
    n_train = n_neg - int(round(0.1 * n_neg))                        # the validation split's rest
    per_epoch = math.ceil(n_train / 64)                              # tiny_config's batch
    assert per_epoch >= 2                                            # so that 3 epochs > 5 steps
    for feature_steps, expected in [(None, 3 * per_epoch), (10_000, 3 * per_epoch), (5 * 4, 5)]:
        cfg = tiny_config(steps=None, epochs=3, feature_steps=feature_steps, eval_every=1)
        model = GenRe(cfg, verbose=False).fit(X, y, h, immutable=imm, categorical=cat)
        assert model.history_[-1]["step"] == expected


def test_training_runs_on_cfg_threads_and_restores_the_setting(monkeypatch):
    import genre
    X, y, h, *_ = toy_data()
    seen, train = [], genre.train_recourse_model
    monkeypatch.setattr(genre, "train_recourse_model",
                        lambda *a, **k: seen.append(torch.get_num_threads()) or train(*a, **k))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        GenRe(tiny_config(steps=2, threads=1), verbose=False).fit(X, y, h)
        GenRe(tiny_config(steps=2, threads=None), verbose=False).fit(X, y, h)
        assert seen == [1, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


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
        GenRe(tiny_config(), verbose=False).fit(np.where(np.arange(4) == 2, np.nan, X), y, h)
    with pytest.raises(ValueError, match="D_h\\^\\+ is empty.*lower gamma"):
        GenRe(tiny_config(gamma=0.999999), verbose=False).fit(X, y, h)
    with pytest.raises(ValueError, match="D_h\\^- is empty"):
        GenRe(tiny_config(), verbose=False).fit(X, np.ones_like(y), h)
    with pytest.raises(ValueError, match="immutable"):
        GenRe(tiny_config(), verbose=False).fit(X, y, h, immutable=np.ones(3, bool))
    with pytest.raises(ValueError, match="X has 25 rows but X_plus has 24"):
        model.log_density(X_neg, X_neg[:-1])


def test_paper_config_has_the_papers_sizes():
    cfg = GenReConfig.paper()
    assert (cfg.n_enc_layers, cfg.n_dec_layers, cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.n_bins) == (16, 16, 32, 8, 32, 50)
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.steps, cfg.feature_steps, cfg.dropout) == (1e-4, 2048, 2000, None, None, 0.1)
    assert GenReConfig.paper(batch_size=16384).batch_size == 16384
    assert (cfg.lam, cfg.gamma, cfg.top_k, cfg.sigma, cfg.n_samples) == (5.0, 0.7, 1000, 0.0, 10)


@pytest.mark.parametrize("setting, message", [
    (dict(select="best"), "GenReConfig.select must be one of ('h', 'density', 'plausible'), got 'best'"),
    (dict(pairing="fast"), "GenReConfig.pairing must be one of ('auto', 'exact', 'prefilter'), got 'fast'"),
    (dict(max_sources=0), "GenReConfig.max_sources must be at least 1, got 0"),
    (dict(lam=float("nan")), "GenReConfig.lam must be a finite number, got nan"),
    (dict(steps=0), "GenReConfig.steps must be at least 1, got 0"),
    (dict(n_bins=1), "GenReConfig.n_bins must be at least 2, got 1"),
    (dict(tau=-1.0), "GenReConfig.tau must be positive, got -1.0"),
    (dict(gamma=1.0), "GenReConfig.gamma must be below 1, got 1.0"),
    (dict(d_model=30, n_heads=4), "GenReConfig.d_model (30) must be a multiple of n_heads (4)"),
])
def test_config_refuses_bad_settings_before_training(setting, message):
    with pytest.raises(ValueError) as err:
        GenReConfig(**setting)
    assert str(err.value).startswith(message)
    GenReConfig(steps=None, feature_steps=None, lam=0.0, sigma=0.0)   # the edges that are allowed
    GenReConfig.paper(batch_size=16384)
