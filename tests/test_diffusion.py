"""Tests of diffusion.py: the EDM pieces against closed forms for Gaussian data, SVDD's
selection against its sampling law, +Q against Eq. 6 by brute force, and the estimators'
contract. Every model is tiny (width 16, tens of steps) so the file runs in seconds.

For data z0 ~ N(m, s^2) everything is known in closed form: the noised marginal is
N(m, s^2 + sigma^2), the ideal denoiser is E[z0 | z] = m + s^2 / (s^2 + sigma^2) (z - m),
and tilting the data by exp(lam r) with r(z) = -z gives N(m - lam s^2, s^2).
"""
import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

import diffusion as dm
from diffusion import DIFFUSION_METHODS, DiffusionConfig, DiffusionQ, DiffusionSVDD

M_TRUE, S_TRUE = 0.3, 0.5
TINY = DiffusionConfig(d_token=2, vae_layers=1, vae_ffn_factor=4, vae_steps=20, vae_batch_size=64,
                       width=16, train_steps=30, batch_size=64, n_steps=8, n_samples=3, n_candidates=3)


def ideal_denoiser(z, sigma):
    """E[z0 | z_sigma] for z0 ~ N(M_TRUE, S_TRUE^2): (B, L), (B,) -> (B, L)."""
    return M_TRUE + S_TRUE ** 2 / (S_TRUE ** 2 + sigma[:, None] ** 2) * (z - M_TRUE)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    with dm.torch_threads(1):
        yield


# ----------------------------------------------------------------------------- EDM

def test_noise_levels_are_karras_schedule_ending_in_zero():
    cfg = DiffusionConfig(n_steps=5, sigma_min=0.01, sigma_max=10.0, rho=7.0)
    s = dm.noise_levels(cfg).double()
    assert s.shape == (6,) and s[-1] == 0 and torch.all(s[:-1] > s[1:])
    assert s[0] == pytest.approx(10.0, rel=1e-6) and s[4] == pytest.approx(0.01, rel=1e-5)
    # evenly spaced in sigma^(1/rho)
    np.testing.assert_allclose(np.diff(s[:-1].numpy() ** (1 / 7)), np.diff(s[:-1].numpy() ** (1 / 7))[0], rtol=1e-4)


def test_forward_noising_has_the_closed_form_marginal():
    g = torch.Generator().manual_seed(0)
    z0 = M_TRUE + S_TRUE * torch.randn(200_000, 1, generator=g)
    z = dm.perturb(z0, 2.0, torch.randn(z0.shape, generator=g))
    assert z.mean().item() == pytest.approx(M_TRUE, abs=0.02)
    assert z.var().item() == pytest.approx(S_TRUE ** 2 + 4.0, rel=0.02)


def test_preconditioned_denoiser_is_c_skip_z_plus_c_out_f():
    """EDM Table 1: with F's last layer zeroed, D(z; sigma) = c_skip z = s_d^2 / (sigma^2 + s_d^2) z."""
    den = dm.Denoiser(3, 8, sigma_data=0.5)
    torch.nn.init.zeros_(den.mlp[-1].weight)
    torch.nn.init.zeros_(den.mlp[-1].bias)
    z, sigma = torch.randn(4, 3), torch.tensor([0.1, 0.5, 1.0, 5.0])
    with torch.no_grad():
        np.testing.assert_allclose(den(z, sigma), (0.25 / (sigma ** 2 + 0.25))[:, None] * z, rtol=1e-6)


def test_sampler_with_the_ideal_denoiser_reproduces_the_gaussian():
    """TabSyn's 50-level churn + Heun sampler is accurate: with E[z0|z] it returns N(m, s^2)."""
    cfg = DiffusionConfig()
    g = torch.Generator().manual_seed(0)
    z = dm.sample(ideal_denoiser, dm.noise_levels(cfg), dm.churn_gamma(cfg.s_churn, cfg.n_steps),
                  torch.randn(20_000, 1, generator=g), g)
    assert z.mean().item() == pytest.approx(M_TRUE, abs=0.015)
    assert z.std().item() == pytest.approx(S_TRUE, rel=0.03)


def test_trained_denoiser_learns_the_ideal_denoiser_of_a_gaussian():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cfg = DiffusionConfig(width=32, train_steps=200, batch_size=256, lr=3e-3)
    Z = M_TRUE + S_TRUE * torch.randn(4000, 1, generator=g)
    den = dm.train_denoiser(dm.Denoiser(1, cfg.width, cfg.sigma_data), Z, cfg, g, verbose=False)
    z, sigma = torch.linspace(-1, 1.6, 27)[:, None], torch.full((27,), 0.5)
    with torch.no_grad():
        err = (den(z, sigma) - ideal_denoiser(z, sigma)).abs().max().item()
        samples = dm.sample(den, dm.noise_levels(cfg), dm.churn_gamma(1.0, cfg.n_steps),
                            torch.randn(4000, 1, generator=g), g)
    assert err < 0.05
    assert samples.mean().item() == pytest.approx(M_TRUE, abs=0.05)
    assert samples.std().item() == pytest.approx(S_TRUE, rel=0.1)


# ----------------------------------------------------------------------------- SVDD

def svdd(lam, M, n=20_000, s_churn=1.0, seed=0):
    """svdd_sample on the ideal denoiser with the reward r(z) = -z (B, M, 1) -> (B, M)."""
    cfg = DiffusionConfig()
    g, g_select = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    return dm.svdd_sample(ideal_denoiser, dm.noise_levels(cfg), dm.churn_gamma(s_churn, cfg.n_steps),
                          torch.randn(n, 1, generator=g), lambda z0: -z0[..., 0], lam, M, g, g_select)


def test_svdd_with_one_candidate_is_plain_sampling_number_for_number():
    cfg = DiffusionConfig()
    g = torch.Generator().manual_seed(0)
    plain = dm.sample(ideal_denoiser, dm.noise_levels(cfg), dm.churn_gamma(1.0, cfg.n_steps),
                      torch.randn(500, 1, generator=g), g)
    assert torch.equal(svdd(lam=7.0, M=1, n=500), plain)


def test_svdd_with_lam_zero_samples_the_model_itself():
    z = svdd(lam=0.0, M=4)
    assert z.mean().item() == pytest.approx(M_TRUE, abs=0.015)
    assert z.std().item() == pytest.approx(S_TRUE, rel=0.03)


def test_svdd_approaches_the_tilted_distribution_when_candidates_differ_enough():
    """P'(z) ~ N(m, s^2) exp(-lam z) = N(m - lam s^2, s^2). With churn gamma = 0.4 and 20
    candidates SVDD gets most of the way; with TabSyn's gamma = 0.02 it moves far less."""
    target = M_TRUE - 2.0 * S_TRUE ** 2
    strong = svdd(lam=2.0, M=20, n=5000, s_churn=20.0)
    weak = svdd(lam=2.0, M=20, n=5000, s_churn=1.0)
    assert abs(strong.mean().item() - target) < 0.08
    assert strong.std().item() == pytest.approx(S_TRUE, rel=0.1)
    assert target < strong.mean().item() < weak.mean().item() < M_TRUE - 0.05


def test_inpainting_holds_the_known_coordinate_and_moves_the_other_toward_its_conditional():
    """2-D Gaussian, correlation 0.8, std 0.5: given z1 = 0.5, z2 ~ N(0.4, 0.3^2). Replacement
    is approximate (it under-conditions); it must hold z1 exactly and move z2 that way."""
    cov = 0.25 * torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    ideal_2d = lambda z, sigma: torch.einsum("bij,bj->bi", cov @ torch.linalg.inv(
        cov + sigma[:, None, None] ** 2 * torch.eye(2)), z)
    cfg = DiffusionConfig()
    g, g_select = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    known = (torch.tensor([True, False]), torch.full((4000, 2), 0.5))
    z = dm.svdd_sample(ideal_2d, dm.noise_levels(cfg), dm.churn_gamma(1.0, cfg.n_steps),
                       torch.randn(4000, 2, generator=g), lambda z0: -z0[..., 0], 0.0, 1, g, g_select, known)
    assert torch.all(z[:, 0] == 0.5)
    assert 0.1 < z[:, 1].mean().item() < 0.4 and z[:, 1].std().item() < 0.45


def test_soft_select_draws_in_proportion_to_exp_lam_value():
    values = torch.tensor([[0.0, -0.5, -1.0, 0.3]]).expand(40_000, 4)
    g = torch.Generator().manual_seed(0)
    for lam in (0.0, 2.0):
        picks = dm.soft_select(values, lam, dm.gumbel_noise(values.shape, g))
        freq = torch.bincount(picks, minlength=4).double() / len(picks)
        p = torch.softmax(lam * values[0].double(), 0)
        se = (p * (1 - p) / len(picks)).sqrt()
        assert torch.all((freq - p).abs() < 4 * se + 1e-9), (lam, freq, p)
    # a large lam picks the highest reward among hand-made candidates, whatever the noise
    hand = torch.tensor([[-3.0, -0.2, -0.9], [-100.5, -101.0, -1.7], [-0.4, -0.41, -2.0]])
    picks = dm.soft_select(hand, 1e6, dm.gumbel_noise(hand.shape, g))
    assert picks.tolist() == [1, 2, 0]


def test_recourse_reward_is_app_d4():
    x = torch.tensor([[0.0, 1.0, 0.5]])
    cand = torch.tensor([[[0.0, 1.0, 0.5], [0.3, 1.0, 0.9], [0.0, 0.0, 0.5]]])     # (1, 3, 3)
    immutable = torch.tensor([False, True, False])
    r = dm.recourse_reward(cand, x, immutable, penalty=100.0)
    np.testing.assert_allclose(r[0], [0.0, -0.5, -1.0 - 100.0], rtol=1e-6)


# ----------------------------------------------------------------------------- the estimators

D = 5
IMMUTABLE = np.array([0, 0, 0, 1, 0], bool)
CATEGORICAL = np.array([0, 0, 0, 1, 1], bool)


class Logistic:
    """h(x) = sigmoid(w^T x + b) with predict_proba, the project's classifier interface."""

    def __init__(self, w=(3.0, 2.0, -1.0, 0.0, 0.5), b=-2.0):
        self.w, self.b = np.array(w), b

    def predict_proba(self, X):
        return 1 / (1 + np.exp(-(np.asarray(X, dtype=np.float64) @ self.w + self.b)))


class Constant:
    def predict_proba(self, X):
        return np.full(len(X), 0.9)


def make_data(n, seed, immutable_value=None):
    """(n, 5): 3 continuous in [0, 1], a binary immutable, a binary mutable; labels from h."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.random((n, 3)), rng.random((n, 2)) < 0.5], axis=1).astype(np.float32)
    if immutable_value is not None:
        X[:, 3] = immutable_value
    return X, (Logistic().predict_proba(X) > 0.5).astype(np.int64)


X_TRAIN, Y_TRAIN = make_data(400, 0)
X_NEG = make_data(60, 1)[0]
X_NEG = X_NEG[Logistic().predict_proba(X_NEG) <= 0.5][:8]


def fitted(cls, space="features", **kwargs):
    return cls(cfg=DiffusionConfig(**{**TINY.__dict__, "space": space}), random_state=3, **kwargs).fit(
        X_TRAIN, Y_TRAIN, Logistic(), immutable=IMMUTABLE, categorical=CATEGORICAL)


@pytest.mark.parametrize("space", ["features", "latent"])
def test_every_method_returns_valid_rows_and_repeats_exactly(space, tmp_path):
    cfg = DiffusionConfig(**{**TINY.__dict__, "space": space})
    for name, factory in DIFFUSION_METHODS.items():
        fit = lambda: factory(random_state=1, cfg=cfg, cache_dir=str(tmp_path)).fit(
            X_TRAIN, Y_TRAIN, Logistic(), immutable=IMMUTABLE, categorical=CATEGORICAL)
        method = fit()
        out = method.recourse(X_NEG)
        assert out.shape == X_NEG.shape and out.dtype == np.float32, name
        assert np.isin(out[:, CATEGORICAL], (0.0, 1.0)).all(), name
        assert 0 <= method.n_failed_ <= len(X_NEG)
        np.testing.assert_array_equal(fit().recourse(X_NEG), out, err_msg=name)
    assert len(list(tmp_path.iterdir())) == 1                          # the four share one model


def test_training_is_deterministic():
    cfg = DiffusionConfig(**{**TINY.__dict__, "space": "latent"})
    a, b = (dm.train_diffusion(X_TRAIN, CATEGORICAL, cfg, seed=5).state_dict() for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a if k != "train_seconds")


def test_kept_variant_holds_immutables_and_paper_variant_can_change_them():
    """D_h^+ holds only immutable = 1, so the model never draws a 0: for x with a 0 the
    paper's variant must change it (the penalty cannot help), the kept variant never does."""
    X, _ = make_data(400, 0, immutable_value=1.0)
    y = np.ones(len(X), dtype=np.int64)
    x_neg = make_data(6, 2, immutable_value=0.0)[0]
    cfg = DiffusionConfig(**{**TINY.__dict__, "space": "features"})
    fit = lambda keep: DiffusionSVDD(keep_immutables=keep, cfg=cfg, random_state=0).fit(
        X, y, Constant(), immutable=IMMUTABLE, categorical=CATEGORICAL)
    paper, kept = fit(False), fit(True)
    out_paper, out_kept = paper.recourse(x_neg), kept.recourse(x_neg)
    assert (out_paper[:, 3] == 1).all() and paper.n_failed_ == len(x_neg)
    np.testing.assert_array_equal(out_kept[:, IMMUTABLE], x_neg[:, IMMUTABLE])
    assert kept.n_failed_ == 0                                        # Constant h says 0.9 everywhere


def test_q_draws_follow_eq6_by_brute_force():
    """With h constant the best-by-h rule returns the first of the draws, a draw from
    Q(x+|x) ~ exp(-lam ||x - x+||_1), 0 where an immutable differs, over D_syn^+."""
    q = fitted(DiffusionQ)
    q.h_ = Constant()
    q.X_syn_ = np.array([[0.1, 0.2, 0.3, 0.0, 1.0], [0.2, 0.2, 0.3, 0.0, 0.0], [0.5, 0.5, 0.5, 0.0, 1.0],
                         [0.1, 0.2, 0.3, 1.0, 1.0]], np.float32)            # the last breaks the immutable
    x = np.array([[0.1, 0.2, 0.3, 0.0, 0.0]], np.float32)
    out = q.recourse(np.repeat(x, 20_000, axis=0))
    hits = (out[:, None, :] == q.X_syn_[None]).all(axis=2)               # (20000, 4)
    assert hits.any(axis=1).all()
    freq = hits.mean(axis=0)
    cost = np.abs(q.X_syn_ - x).sum(axis=1)
    q_true = np.where(q.X_syn_[:, 3] == x[0, 3], np.exp(-5.0 * cost), 0.0)
    q_true /= q_true.sum()
    se = np.sqrt(q_true * (1 - q_true) / len(out))
    assert np.all(np.abs(freq - q_true) < 4 * se + 1e-9), (freq, q_true)


def test_q_returns_x_and_counts_a_failure_when_no_synthetic_row_keeps_the_immutables():
    q = fitted(DiffusionQ)
    q.X_syn_ = q.X_syn_.copy()
    q.X_syn_[:, 3] = 1.0
    x = X_NEG.copy()
    x[:, 3] = 0.0
    with pytest.warns(UserWarning):
        out = q.recourse(x)
    np.testing.assert_array_equal(out, x)
    assert q.n_failed_ == len(x)


def test_cache_hit_gives_the_same_model_and_answers(tmp_path):
    cfg = DiffusionConfig(**{**TINY.__dict__, "space": "latent"})
    first = DiffusionSVDD(cfg=cfg, random_state=0, cache_dir=str(tmp_path)).fit(
        X_TRAIN, Y_TRAIN, Logistic(), immutable=IMMUTABLE, categorical=CATEGORICAL)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("diffusion_latent_")
    second = DiffusionSVDD(cfg=cfg, random_state=0, cache_dir=str(tmp_path)).fit(
        X_TRAIN, Y_TRAIN, Logistic(), immutable=IMMUTABLE, categorical=CATEGORICAL)
    assert second.train_seconds_ == first.train_seconds_                 # loaded, not retrained
    np.testing.assert_array_equal(second.recourse(X_NEG), first.recourse(X_NEG))


def test_features_space_round_trips_and_is_scaled_to_sigma_data():
    model = dm.train_diffusion(X_TRAIN, CATEGORICAL, DiffusionConfig(**{**TINY.__dict__, "space": "features"}), 0)
    x = torch.from_numpy(X_TRAIN)
    with torch.no_grad():
        np.testing.assert_allclose(model.to_features(model.to_space(x)), x, atol=1e-5)
        np.testing.assert_allclose(model.to_space(x).std(dim=0), 0.5, rtol=1e-4)


def test_vae_reconstructs_held_out_rows_better_than_the_mean_row():
    torch.manual_seed(0)
    cfg = DiffusionConfig(d_token=4, vae_layers=1, vae_ffn_factor=8, vae_steps=150, vae_batch_size=128, vae_lr=3e-3)
    X, held = torch.from_numpy(X_TRAIN[:300]), torch.from_numpy(X_TRAIN[300:])
    vae = dm.ColumnVAE(CATEGORICAL, cfg)
    vae.scale.fit(X)
    vae = dm.train_vae(vae.train(), X, cfg, torch.Generator().manual_seed(0), verbose=False)
    with torch.no_grad():
        x_hat = vae.decode(vae.encode(held)[0])                          # (100, D)
    num, cat = torch.from_numpy(~CATEGORICAL), torch.from_numpy(CATEGORICAL)
    assert ((x_hat - held)[:, num] ** 2).mean() < 0.05 * ((X.mean(0) - held)[:, num] ** 2).mean()
    assert ((x_hat[:, cat] > 0.5).float() == held[:, cat]).float().mean() > 0.99


def test_unfitted_use_and_bad_input_raise_clear_errors():
    with pytest.raises(NotFittedError, match="DiffusionSVDD is not fitted"):
        DiffusionSVDD().recourse(X_NEG)
    with pytest.raises(NotFittedError, match="DiffusionQ is not fitted"):
        DiffusionQ().recourse(X_NEG)
    q = fitted(DiffusionQ)
    bad = [(lambda: q.recourse(X_NEG[:, :3]), "features"),
           (lambda: q.recourse(np.full((2, D), np.nan)), "NaN"),
           (lambda: DiffusionQ(cfg=TINY).fit(X_TRAIN, Y_TRAIN[:5], Logistic()), "one label"),
           (lambda: DiffusionSVDD(lam=-1.0, cfg=TINY).fit(X_TRAIN, Y_TRAIN, Logistic()), "lam"),
           (lambda: DiffusionQ(cfg=TINY).fit(X_TRAIN, np.zeros(len(X_TRAIN)), Logistic()), "D_h"),
           (lambda: DiffusionConfig(space="pixels"), "space"),
           (lambda: DiffusionQ(cfg=TINY).fit(X_TRAIN, Y_TRAIN, Logistic(), immutable=[True]), "mask")]
    for call, word in bad:
        with pytest.raises(ValueError, match=word) as err:
            call()
        assert "\n" not in str(err.value)


def test_init_stores_arguments_only_and_registry_names_the_four_methods():
    m = DIFFUSION_METHODS["diffusion_svdd10"](random_state=7, cache_dir="somewhere", verbose=True)
    assert (m.lam, m.keep_immutables, m.random_state, m.cache_dir, m.verbose, m.cfg) == (10.0, False, 7, "somewhere",
                                                                                         True, None)
    assert not [k for k in vars(m) if k.endswith("_")]
    assert DIFFUSION_METHODS["diffusion_svdd5_kept"]().keep_immutables
    assert set(DIFFUSION_METHODS) == {"diffusion_q", "diffusion_svdd5", "diffusion_svdd10", "diffusion_svdd5_kept"}


def test_constraints_are_refused_in_one_line_before_any_work():
    """common.RecourseMethod's constraints argument: Table 4's methods keep none, so they refuse
    them (at fit, and at recourse before they ask whether they are fitted)."""
    for cls in (DiffusionQ, DiffusionSVDD):
        with pytest.raises(ValueError, match=f"{cls.__name__} keeps no constraints") as err:
            cls(cfg=TINY).fit(X_TRAIN, Y_TRAIN, Logistic(), constraints=object())
        assert "\n" not in str(err.value)
        with pytest.raises(ValueError, match="keeps no constraints"):
            cls().recourse(X_TRAIN[:2], constraints=object())
