"""Tests of the generative baselines (generative.py): CCHVAE, REVISE, CRUDS and their models.

A tiny data set: three continuous features driven by two hidden factors, a binary
immutable and a three-valued one-hot group; h is a fixed logistic model. The networks
are shrunk (layers 32-16-4) and trained a few epochs so the file runs in seconds.
"""
import numpy as np
import pytest
import torch

import generative
from baselines import l1_shell_sample
from common import project_categoricals, torch_threads
from generative import CCHVAE, CRUDS, REVISE, VAEConfig, train_vae

D = 7
IMMUTABLE = np.array([0, 0, 0, 1, 0, 0, 0], bool)
CATEGORICAL = np.array([0, 0, 0, 1, 1, 1, 1], bool)
GROUPS = [[4, 5, 6]]
SMALL = dict(vae_epochs=4, vae_layers=(32, 16, 4))


class Logistic(torch.nn.Module):
    """h(x) = sigmoid(w^T x + b): logits from forward, probabilities from predict_proba."""

    def __init__(self):
        super().__init__()
        self.w = torch.tensor([3.0, 2.0, -1.0, 0.5, 0.0, 1.0, -1.0])
        self.b = torch.tensor(-2.2)

    def forward(self, x):
        return x @ self.w + self.b

    def predict_proba(self, X):
        with torch.no_grad():
            return torch.sigmoid(self(torch.as_tensor(X, dtype=torch.float32))).numpy()


def make_data(n, seed):
    """Rows (n, 7): 3 continuous features from 2 factors, a binary, a one-hot of 3."""
    rng = np.random.default_rng(seed)
    t = rng.random((n, 2))
    cont = np.stack([t[:, 0], t[:, 1], 0.5 * (t[:, 0] + t[:, 1])], axis=1) + 0.02 * rng.normal(size=(n, 3))
    binary = (rng.random((n, 1)) < 0.5)
    onehot = np.eye(3)[(t[:, 0] * 3).astype(int).clip(0, 2)]
    return np.concatenate([cont.clip(0, 1), binary, onehot], axis=1).astype(np.float32)


H = Logistic()
X_TRAIN = make_data(300, 0)
Y_TRAIN = (H.predict_proba(X_TRAIN) > 0.5).astype(np.int64)
X_TEST = make_data(200, 1)
X_NEG = X_TEST[H.predict_proba(X_TEST) <= 0.5][:12]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny networks: one torch thread is fastest (two fight on a busy 2-core CPU)."""
    with torch_threads(1):
        yield


def fit(cls, mode, **kw):
    return cls(mode=mode, **{**SMALL, **kw}).fit(X_TRAIN, Y_TRAIN, H, immutable=IMMUTABLE,
                                                 categorical=CATEGORICAL, groups=GROUPS)


FAST = {CCHVAE: {}, REVISE: dict(n_iter=60), CRUDS: dict(n_iter=60)}


@pytest.fixture(scope="module")
def fitted():
    """Each method fitted once per mode, with its recourse for X_NEG."""
    out = {}
    for cls, kw in FAST.items():
        for mode in ("designed", "paper"):
            method = fit(cls, mode, **kw)
            out[cls, mode] = (method, method.recourse(X_NEG))
    return out


def test_vae_reconstructs_held_out_rows_better_than_the_mean_row():
    mutable = ~IMMUTABLE
    vae = train_vae(X_TRAIN, mutable, VAEConfig(hidden=(32, 16), latent=4, epochs=15), "designed", seed=0)
    X = torch.as_tensor(X_TEST)
    with torch.no_grad():
        recon = vae.decode(vae.encode(X)[0], X)                                   # (N, D)
    err_vae = ((recon - X)[:, mutable] ** 2).mean()
    err_mean = ((X_TRAIN.mean(axis=0) - X_TEST)[:, mutable] ** 2).mean()
    assert err_vae < 0.5 * err_mean


@pytest.mark.parametrize("cls", [CCHVAE, REVISE, CRUDS])
@pytest.mark.parametrize("mode", ["designed", "paper"])
def test_immutables_kept_and_categoricals_valid(fitted, cls, mode):
    method, X_plus = fitted[cls, mode]
    assert X_plus.shape == X_NEG.shape and X_plus.dtype == np.float32
    assert np.array_equal(X_plus[:, IMMUTABLE], X_NEG[:, IMMUTABLE])
    assert set(np.unique(X_plus[:, 3])) <= {0.0, 1.0}
    group = X_plus[:, GROUPS[0]]
    assert np.isin(group, (0.0, 1.0)).all() and (group.sum(axis=1) == 1).all()


class Blocker(torch.nn.Module):
    """h's logit = 20 (x3 - 0.5): only the binary immutable x3 counts, so a row with x3 = 0 can
    never be flipped (every recourse keeps its x3) and a row with x3 = 1 is positive anywhere."""

    def forward(self, x):
        return 20.0 * (x[:, 3] - 0.5)

    def predict_proba(self, X):
        with torch.no_grad():
            return torch.sigmoid(self(torch.as_tensor(X, dtype=torch.float32))).numpy()


@pytest.mark.parametrize("cls", [CCHVAE, REVISE, CRUDS])
@pytest.mark.parametrize("mode", ["designed", "paper"])
def test_n_failed_counts_exactly_the_rows_an_immutable_blocks(fitted, cls, mode, monkeypatch):
    method, _ = fitted[cls, mode]
    monkeypatch.setattr(method, "h_", Blocker())
    if cls is CCHVAE:
        monkeypatch.setattr(method, "max_iter", 30)           # a blocked row scans every shell
    blocked = int((X_NEG[:, 3] == 0).sum())
    assert 0 < blocked < len(X_NEG)
    method.recourse(X_NEG)
    assert method.n_failed_ == blocked


def test_paper_mode_vae_loss_is_mean_squared_error_plus_summed_kl():
    """The fork's VAE_loss by hand: MSE averaged over batch and features, KL summed over both."""
    vae = generative.VAE(np.ones(D, bool), VAEConfig(hidden=(16,), latent=3)).eval()
    x = torch.as_tensor(X_TRAIN[:8])
    loss = generative.vae_loss(vae, x, torch.Generator().manual_seed(0), "paper", beta=0.0)
    with torch.no_grad():
        mu, logvar = (t.numpy().astype(np.float64) for t in vae.encode(x))
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(0)).numpy()
        x_hat = vae.decode(torch.as_tensor(mu + np.exp(0.5 * logvar) * eps, dtype=torch.float32), x).numpy()
    mse = ((x_hat - X_TRAIN[:8]) ** 2).mean()
    kl = -0.5 * (1 + logvar - mu ** 2 - np.exp(logvar)).sum()
    assert abs(loss.item() - (mse + kl)) < 1e-4 * (1 + abs(mse + kl))


def test_cchvae_answer_is_nearest_positive_of_first_shell_holding_one(fitted):
    """Brute force, one row at a time with the same random numbers: scan the shells,
    stop at the first with a positive, take its positive nearest x in L1."""
    method = fitted[CCHVAE, "designed"][0]
    shells_used = []
    for x in X_NEG[:4]:
        x_t = torch.as_tensor(x[None])                                          # (1, D)
        g = torch.Generator().manual_seed(method.random_state)
        with torch.no_grad():
            z0 = method.model_.encode(x_t)[0]
            for shell in range(method.max_iter):
                lo = shell * method.step
                Z = l1_shell_sample(z0, lo, lo + method.step, method.n_search_samples, g)[0]   # (n, L)
                x_rep = x_t.expand(len(Z), D)
                cand = project_categoricals(method.model_.decode(Z, x_rep).numpy(), CATEGORICAL, GROUPS)
                cand = np.where(IMMUTABLE, x, cand.clip(0, 1))
                pos = H.predict_proba(cand) > 0.5
                if pos.any():
                    cost = np.where(pos, np.abs(cand - x).sum(axis=1), np.inf)
                    expected = cand[cost.argmin()]
                    break
        shells_used.append(shell)
        np.testing.assert_array_equal(method.recourse(x[None])[0], expected)
    assert max(shells_used) > 0          # the scan had to grow the shell at least once


def test_revise_returns_the_valid_iterate_of_lowest_loss(fitted):
    """Replay REVISE's Adam steps by hand and keep every valid iterate with its loss."""
    method, X_plus = fitted[REVISE, "designed"]
    X = torch.as_tensor(X_NEG)
    z = method.model_.encode(X)[0].detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=method.lr)
    best = np.full(len(X), np.inf)
    answer = X_NEG.copy()
    for _ in range(method.n_iter):
        dec = method.model_.decode(z, X)
        cats = torch.as_tensor(project_categoricals(dec.detach().numpy(), CATEGORICAL, GROUPS))
        x = torch.where(torch.as_tensor(IMMUTABLE), X, torch.where(torch.as_tensor(CATEGORICAL), cats, dec))
        loss = torch.nn.functional.softplus(-H(x)) + method.lam * (x - X).abs().sum(dim=1)
        valid = (H(x) > 0).detach().numpy()
        better = valid & (loss.detach().numpy() < best)
        best[better] = loss.detach().numpy()[better]
        answer[better] = x.detach().numpy()[better]
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    assert np.isfinite(best).any()       # some row found a valid iterate
    np.testing.assert_allclose(X_plus, answer, atol=1e-6)


def test_cruds_moves_w_and_keeps_z_at_the_encoding_of_x(fitted):
    method, X_plus = fitted[CRUDS, "designed"]
    weights = {k: v.clone() for k, v in method.model_.state_dict().items()}
    method.recourse(X_NEG)
    X = torch.as_tensor(X_NEG)
    with torch.no_grad():
        assert torch.equal(method.z_, method.model_.encode_z(X)[0])            # z fixed at mu_z(x)
        assert (method.w_ - method.w0_).abs().sum(dim=1).min() > 1e-3          # every row's w moved
        last = method.model_.decode(method.z_, method.w_, X)                    # the last iterate
    failed = H.predict_proba(X_plus) <= 0.5
    expected = project_categoricals(np.where(IMMUTABLE, X_NEG, last.clip(0, 1).numpy()), CATEGORICAL, GROUPS)
    np.testing.assert_allclose(X_plus[failed], expected[failed], atol=1e-6)
    assert all(torch.equal(weights[k], v) for k, v in method.model_.state_dict().items())


@pytest.mark.parametrize("cls", [CCHVAE, REVISE, CRUDS])
def test_same_random_state_same_numbers(fitted, cls):
    again = fit(cls, "designed", **FAST[cls])
    np.testing.assert_array_equal(again.recourse(X_NEG), fitted[cls, "designed"][1])


def test_cache_reuse_gives_identical_output_and_vae_is_shared(tmp_path, monkeypatch):
    first = fit(CCHVAE, "paper", cache_dir=str(tmp_path))
    out = first.recourse(X_NEG)
    assert len(list(tmp_path.glob("vae_paper_*.pt"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("trained again instead of loading the cache")
    monkeypatch.setattr(generative, "train_vae", no_training)
    np.testing.assert_array_equal(fit(CCHVAE, "paper", cache_dir=str(tmp_path)).recourse(X_NEG), out)
    fit(REVISE, "paper", cache_dir=str(tmp_path), n_iter=5)      # REVISE loads CCHVAE's VAE
    with pytest.raises(AssertionError, match="trained again"):
        fit(CCHVAE, "paper", cache_dir=str(tmp_path), random_state=1)   # another seed: another model


def test_bad_input_is_a_one_line_value_error():
    with pytest.raises(ValueError, match="unknown mode"):
        fit(CCHVAE, "fork")
    with pytest.raises(ValueError, match="labels|label"):
        CRUDS(**SMALL).fit(X_TRAIN, Y_TRAIN[:-1], H)
    with pytest.raises(ValueError, match="every feature is immutable"):
        CCHVAE(**SMALL).fit(X_TRAIN, Y_TRAIN, H, immutable=np.ones(D, bool))
    with pytest.raises(ValueError, match="vae_layers"):
        fit(REVISE, "designed", vae_layers=(32,))
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        CRUDS().recourse(X_NEG)
    method = fit(CCHVAE, "designed", vae_epochs=1)
    with pytest.raises(ValueError, match="features"):
        method.recourse(X_NEG[:, :5])


def test_active_units_count_the_latent_dimensions_whose_mean_varies_with_x():
    from generative import VAE, VAEConfig, active_units
    X = np.random.default_rng(0).random((64, 5)).astype(np.float32)
    vae = VAE(np.ones(5, bool), VAEConfig(hidden=(16,), latent=4)).eval()
    with torch.no_grad():
        vae.mu.weight.zero_()                                   # every x encodes to the bias: collapsed
        assert active_units(vae, X) == 0
        vae.mu.weight[:2] = 100.0                               # two units read the encoder's features
    assert active_units(vae, X) == 2
