"""Recourse from a pre-trained tabular diffusion model: the comparison of the paper's
Sec. 5.6 (Table 4, App. D.4).

The paper trains TabSyn (Zhang et al. 2024) on D_h^+ alone and asks whether guidance
at sampling time can do GenRe's job without GenRe's pairs. Two ways, both here:

  +Q    a skyline: sample a synthetic D_syn^+ of |D_h^+| rows, then draw recourse
        from Q(x+|x) ~ exp(-lam C(x, x+)) over D_syn^+ (Eq. 6), as GenRe's pairing does.
  SVDD  derivative-free guidance (Li et al. 2024, "soft value-based decoding"):
        sample P'(x+) ~ P(x+) exp(lam r(x+)) (Eq. 10) with the reward of App. D.4,
        r(x+) = -||x+ - x||_2 - 100 * 1[an immutable of x+ differs from x].

The file reads from the parts to the whole:
    DiffusionConfig     settings; tabsyn() is TabSyn's design, the default its simpler twin
    ColumnVAE           TabSyn's VAE: a token per column, transformer encoder and decoder
    Denoiser, edm_loss  EDM (Karras et al. 2022) as TabSyn sets it: preconditioning, an MLP
                        with a noise-level embedding, log-normal training noise
    churn, heun_step    TabSyn's sampler (EDM's stochastic sampler): fresh noise, a Heun step
    sample              plain sampling; svdd_sample the guided one (Li et al. 2024, Alg. 1)
    DiffusionQ, DiffusionSVDD   the estimators; DIFFUSION_METHODS names them

diffusion_study.py measures them (`python diffusion_study.py --compare`, or --test);
evaluate.py runs them as the rows of Table 4.

Which model. TabSyn runs the diffusion in the latent of its VAE (DiffusionConfig.tabsyn(),
space="latent"); the default runs the same diffusion directly on the standardised features
(space="features"), because on the development split it did as well: the Score (mean of
dev seeds 0 and 1, 200 rows each), from `python diffusion_study.py --compare`:

                      compas            heloc             adult
                   latent features   latent features   latent features
    diffusion_q     1.725   1.785     1.878   1.865     1.608   1.746
    svdd5           1.484   1.402     1.826   1.813     1.372   1.471
    svdd10          1.501   1.461     1.821   1.821     1.391   1.503
    svdd5_kept      1.535   1.563     1.826   1.813     1.412   1.469
    train (s)         121      66       101      33        59      44
    SVDD recourse (s)  55      16       120      14        85      19

(all 12 cells: 1.615 latent, 1.643 features; the features win 7, the latent 4; seconds are
wall time on a 2-core CPU shared with other jobs). The latent's +Q draws fewer valid rows
on adult (Val 0.89 against 0.98), and SVDD must decode every candidate through the VAE's
transformer at every step, 4 to 8 times slower.

Two choices the paper leaves open, measured the same way (features, dev seeds 0 and 1,
`python diffusion_study.py --compare --spaces features --set FIELD=VALUE`):
  * One recourse per x: GenRe's rule, the best of n_samples = 10 draws by h. SVDD's own
    single draw (n_samples=1) scores about the same (compas svdd5 1.489 against 1.402,
    adult 1.446 against 1.471) with fewer changed immutables (compas 118 of 200 against
    145): h prefers some immutables changed, and the best-by-h rule picks those draws.
  * How much SVDD can steer: TabSyn's sampler adds little fresh noise per step
    (S_churn = 1, gamma = 0.02), and that noise is all SVDD's candidates differ by. The
    Score of svdd5 with svdd_churn = 0 (no choice: the unguided model), 1 and 20:
    compas 1.383 / 1.402 / 1.582, adult 1.452 / 1.471 / 1.552, heloc 1.820 / 1.813 / 1.825;
    svdd10 with 1 and 20: compas 1.461 / 1.641, adult 1.503 / 1.612, heloc 1.821 / 1.856.
    The default keeps TabSyn's sampler (the comparison as the paper ran it);
    DiffusionConfig(svdd_churn=20) is the stronger SVDD.

Shape letters: B rows (or particles), D features, d the token width, L the diffusion's
dimension (D, or D * d in the latent), W the MLP's width, M SVDD's candidates per step,
S noise levels, n draws per row.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.base import BaseEstimator

from common import (RecourseMethod, as_mask, check_classifier, check_features, check_fitted, check_groups,
                    check_labels, probability_of_1, project_categoricals, set_seed, torch_threads, write_cache)
from constraints import as_domain
from generative import cache_key
from genre import pairing_distribution, training_sets


# ----------------------------------------------------------------------------- settings

@dataclass
class DiffusionConfig:
    # the space the diffusion runs in
    space: str = "features"       # the standardised features, chosen by the measurement in the module's
                                  # docstring (TabSyn: "latent", its VAE's latent; see tabsyn())
    d_token: int = 4              # TabSyn: D_TOKEN, each column's latent is 4 numbers
    vae_layers: int = 2           # TabSyn: NUM_LAYERS of each transformer
    vae_ffn_factor: int = 32      # TabSyn: FACTOR, feed-forward width d_token * 32
    vae_lr: float = 1e-3          # TabSyn
    vae_batch_size: int = 256     # TabSyn
    vae_steps: int = 600          # CPU size (TabSyn: 4000 epochs)
    beta_max: float = 1e-2        # TabSyn: the KL weight starts at 1e-2 ...
    beta_min: float = 1e-5        # ... and shrinks (TabSyn: x0.7 on plateaus; here geometric per step)
    # EDM, as TabSyn sets it
    sigma_data: float = 0.5       # EDM / TabSyn; the data are scaled to this standard deviation
    p_mean: float = -1.2          # EDM / TabSyn: training noise ln sigma ~ N(-1.2, 1.2^2)
    p_std: float = 1.2
    sigma_min: float = 0.002      # EDM / TabSyn
    sigma_max: float = 80.0       # EDM / TabSyn
    rho: float = 7.0              # EDM / TabSyn: the spacing of the noise levels
    n_steps: int = 50             # TabSyn: 50 noise levels, Heun steps between them
    s_churn: float = 1.0          # EDM / TabSyn: S_churn, the sampler's fresh noise at each level
    svdd_churn: float = 1.0       # TabSyn: S_churn while SVDD guides; its candidates differ only by this
                                  # noise (20 steers more strongly: the module's docstring)
    width: int = 128              # CPU size (TabSyn: 1024); the MLP is width -> 2 width -> 2 width -> width
    lr: float = 1e-3              # TabSyn
    batch_size: int = 1024        # CPU size (TabSyn: 4096)
    train_steps: int = 2000       # CPU size (TabSyn: up to 10000 epochs)
    # recourse
    gamma: float = 0.7            # Sec. 4.1: D_h^+ = {y = 1, h(x) > gamma}
    top_k: int = 1000             # GenRe's code: Q keeps its top 1000 targets
    n_samples: int = 10           # Sec. 5.1 (GenRe's rule; the paper is silent for Table 4): draws per x,
                                  # the one h rates highest is returned
    n_candidates: int = 20        # SVDD's code: duplicate_size 20 candidates per reverse step
    penalty: float = 100.0        # App. D.4: the reward's penalty for a changed immutable
    chunk: int = 256              # rows sampled at once (memory: chunk * n_samples * M * L)

    def __post_init__(self):
        if self.space not in ("latent", "features"):
            raise ValueError(f"DiffusionConfig.space must be 'latent' or 'features', got {self.space!r}")
        for name in ("d_token", "vae_layers", "vae_ffn_factor", "vae_batch_size", "vae_steps", "n_steps",
                     "width", "batch_size", "train_steps", "top_k", "n_samples", "n_candidates", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"DiffusionConfig.{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"DiffusionConfig needs 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    @classmethod
    def tabsyn(cls, **overrides):
        """TabSyn's design at this file's CPU sizes: the diffusion runs in the VAE's latent."""
        return cls(**{"space": "latent", **overrides})


TRAINING_FIELDS = ("space", "d_token", "vae_layers", "vae_ffn_factor", "vae_lr", "vae_batch_size", "vae_steps",
                   "beta_max", "beta_min", "sigma_data", "p_mean", "p_std", "width", "lr", "batch_size",
                   "train_steps", "gamma")   # the fields that change the trained model (the cache key)


# ----------------------------------------------------------------------------- the space: scaling, TabSyn's VAE

class Standardize(nn.Module):
    """z -> (z - mean) / std * scale, fitted on the training rows, and its inverse. (B, L) -> (B, L)."""

    def __init__(self, L: int, scale: float = 1.0):
        super().__init__()
        self.register_buffer("mean", torch.zeros(L))
        self.register_buffer("std", torch.ones(L))
        self.scale = scale

    def fit(self, Z):
        self.mean.copy_(Z.mean(dim=0))
        self.std.copy_(Z.std(dim=0).clamp(min=1e-6))                   # a constant column stays put
        return self

    def forward(self, z):
        return (z - self.mean) / self.std * self.scale

    def inverse(self, z):
        return z / self.scale * self.std + self.mean


class ColumnTokenizer(nn.Module):
    """TabSyn's tokenizer: column j becomes the token t_j = x_j w_j + b_j of width d. For a
    binary column that is its two category embeddings b_j (x = 0) and w_j + b_j (x = 1),
    TabSyn's embedding table. (B, D) -> (B, D, d)."""

    def __init__(self, D: int, d: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(D, d) / math.sqrt(d))
        self.b = nn.Parameter(torch.randn(D, d) / math.sqrt(d))

    def forward(self, x):
        return x[:, :, None] * self.w + self.b                           # (B, D) -> (B, D, d)


def column_transformer(cfg: DiffusionConfig) -> nn.TransformerEncoder:
    """TabSyn's transformer over the column tokens: pre-norm, 1 head, feed-forward d * 32, ReLU."""
    layer = nn.TransformerEncoderLayer(cfg.d_token, nhead=1, dim_feedforward=cfg.d_token * cfg.vae_ffn_factor,
                                       dropout=0.0, batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, cfg.vae_layers, enable_nested_tensor=False)


class ColumnVAE(nn.Module):
    """TabSyn's VAE (Zhang et al. 2024, Sec. 3.2): a token per column, a transformer for the
    latent's mean and one for its log-variance, a transformer decoder, and per column a
    read-out w'_j . h_j + c_j: the (standardised) value of a numerical column, the logit
    of a binary one. Departures at this size: the numerical columns are standardised inside
    (TabSyn quantile-normalises them; the scaled features here are already bounded), there
    is no [CLS] token (TabSyn drops it from the latent anyway), and each column of a one-hot
    group is its own binary token (TabSyn: one token per categorical column)."""

    def __init__(self, binary: np.ndarray, cfg: DiffusionConfig):
        super().__init__()
        D, d = len(binary), cfg.d_token
        self.register_buffer("binary", torch.as_tensor(binary, dtype=torch.bool))   # (D,)
        self.scale = Standardize(D)
        self.tokenize = ColumnTokenizer(D, d)
        self.enc_mu, self.enc_logvar, self.dec = (column_transformer(cfg) for _ in range(3))
        self.read_w = nn.Parameter(torch.randn(D, d) / math.sqrt(d))
        self.read_b = nn.Parameter(torch.zeros(D))

    def standardise(self, x):
        """Numerical columns to unit scale, binary ones kept 0/1. (B, D) -> (B, D)."""
        return torch.where(self.binary, x, self.scale(x))

    def encode(self, x):
        """q(z|x): x (B, D) -> mu, log sigma^2, each (B, D, d)."""
        t = self.tokenize(self.standardise(x))                          # (B, D, d)
        return self.enc_mu(t), self.enc_logvar(t)

    def read_out(self, z):
        """The decoder's output per column: (B, D, d) -> (B, D) values (numerical) or logits (binary)."""
        return (self.dec(z) * self.read_w).sum(dim=2) + self.read_b

    def decode(self, z):
        """p(x|z)'s mean in feature units: z (B, D, d) -> x (B, D); a binary column's P(x_j = 1)."""
        out = self.read_out(z)
        return torch.where(self.binary, torch.sigmoid(out), self.scale.inverse(out))


def vae_loss(vae: ColumnVAE, x, eps, beta: float):
    """TabSyn's loss: MSE over the numerical columns + cross-entropy over the categorical ones
    (each averaged) + beta KL(q(z|x) || N(0, I)) averaged over batch and latent. x (B, D)."""
    mu, logvar = vae.encode(x)
    out = vae.read_out(mu + torch.exp(0.5 * logvar) * eps)             # (B, D)
    target, num = vae.standardise(x), ~vae.binary
    mse = F.mse_loss(out[:, num], target[:, num]) if num.any() else out.new_zeros(())
    ce = F.binary_cross_entropy_with_logits(out[:, vae.binary], x[:, vae.binary]) if vae.binary.any() \
        else out.new_zeros(())
    kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).mean()
    return mse + ce + beta * kl


# ----------------------------------------------------------------------------- EDM (Karras et al. 2022)

def noise_levels(cfg: DiffusionConfig) -> torch.Tensor:
    """EDM Eq. 5, the sampling noise levels, and a last 0:
    sigma_i = (s_max^(1/rho) + i / (S - 1) (s_min^(1/rho) - s_max^(1/rho)))^rho,  i = 0 .. S - 1.  -> (S + 1,)"""
    i = torch.arange(cfg.n_steps, dtype=torch.float64) / max(cfg.n_steps - 1, 1)
    lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
    return torch.cat([(hi + i * (lo - hi)) ** cfg.rho, torch.zeros(1, dtype=torch.float64)]).float()


def perturb(z0, sigma, eps):
    """The forward process (variance exploding): z_sigma = z0 + sigma eps, so q(z_sigma | z0) = N(z0, sigma^2 I).
    z0 (B, L), sigma (B, 1) or a float, eps (B, L) ~ N(0, I)."""
    return z0 + sigma * eps


class NoiseEmbedding(nn.Module):
    """TabSyn's noise-level embedding: sinusoids of c_noise = ln(sigma) / 4, then an MLP. (B,) -> (B, W)."""

    def __init__(self, width: int):
        super().__init__()
        self.register_buffer("freqs", (1 / 10000) ** (torch.arange(width // 2) / (width // 2)))
        self.mlp = nn.Sequential(nn.Linear(2 * (width // 2), width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, c_noise):
        angle = c_noise[:, None] * self.freqs                           # (B, W/2)
        return self.mlp(torch.cat([angle.sin(), angle.cos()], dim=1))   # (B, W)


class Denoiser(nn.Module):
    """EDM's preconditioned denoiser (Karras et al. 2022, Table 1), TabSyn's MLP inside:

        D(z; sigma) = c_skip z + c_out F(c_in z; c_noise),
        c_skip = s_d^2 / (sigma^2 + s_d^2),  c_out = sigma s_d / sqrt(sigma^2 + s_d^2),
        c_in = 1 / sqrt(sigma^2 + s_d^2),    c_noise = ln(sigma) / 4.

    F: Linear(L, W) + noise embedding -> W -> 2W -> 2W -> W -> L, SiLU between.
    """

    def __init__(self, L: int, width: int, sigma_data: float):
        super().__init__()
        self.sigma_data = sigma_data
        self.embed = NoiseEmbedding(width)
        self.proj = nn.Linear(L, width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, 2 * width), nn.SiLU(),
                                 nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, L))

    def forward(self, z, sigma):
        """z (B, L), sigma (B,) -> the estimate of the clean z0, (B, L)."""
        s, sd = sigma[:, None], self.sigma_data
        norm = (s ** 2 + sd ** 2).sqrt()                                # (B, 1)
        c_skip, c_out, c_in = sd ** 2 / norm ** 2, s * sd / norm, 1 / norm
        F_z = self.mlp(self.proj(c_in * z) + self.embed(sigma.log() / 4))   # (B, L) -> (B, W) -> (B, L)
        return c_skip * z + c_out * F_z


def edm_loss(denoiser: Denoiser, z0, sigma, eps):
    """EDM's training loss: E lambda(sigma) ||D(z0 + sigma eps; sigma) - z0||^2, with
    lambda(sigma) = (sigma^2 + s_d^2) / (sigma s_d)^2; mean over batch and latent.
    z0 (B, L), sigma (B,) drawn as ln sigma ~ N(P_mean, P_std^2), eps (B, L)."""
    sd = denoiser.sigma_data
    weight = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2                 # (B,)
    err = denoiser(perturb(z0, sigma[:, None], eps), sigma) - z0       # (B, L)
    return (weight[:, None] * err ** 2).mean()


def churn(z, sigma, gamma: float, eps):
    """The stochastic half of EDM's sampler (Karras et al. 2022, Alg. 2, lines 5-6): raise the
    noise level to sigma_hat = (1 + gamma) sigma with fresh noise,
    z_hat = z + sqrt(sigma_hat^2 - sigma^2) eps. z, eps (..., L) -> z_hat (..., L), sigma_hat."""
    sigma_hat = (1 + gamma) * sigma
    return z + (sigma_hat ** 2 - sigma ** 2) ** 0.5 * eps, sigma_hat


def heun_step(denoiser, z_hat, z0_hat, sigma_hat, sigma_next):
    """The deterministic half (Alg. 2, lines 7-11): a Heun step of the probability-flow ODE
    dz/dsigma = (z - D(z; sigma)) / sigma from sigma_hat to sigma_next, given z0_hat = D(z_hat; sigma_hat):

        z' = z_hat + (sigma_next - sigma_hat) d,  d = (z_hat - z0_hat) / sigma_hat   (Euler)
        z' = z_hat + (sigma_next - sigma_hat) (d + d') / 2,  d' = (z' - D(z'; sigma_next)) / sigma_next
                                                     (the correction, skipped at sigma_next = 0)
    z_hat, z0_hat (B, L) -> (B, L)."""
    d = (z_hat - z0_hat) / sigma_hat
    z = z_hat + (sigma_next - sigma_hat) * d
    if sigma_next > 0:
        d_next = (z - denoiser(z, sigma_next.expand(len(z)))) / sigma_next
        z = z_hat + (sigma_next - sigma_hat) * (d + d_next) / 2
    return z


def churn_gamma(s_churn: float, n_steps: int) -> float:
    """EDM: gamma = min(S_churn / S, sqrt(2) - 1) at every noise level (TabSyn: S_churn = 1)."""
    return min(s_churn / n_steps, math.sqrt(2) - 1)


# ----------------------------------------------------------------------------- the model and its training

class TabularDiffusion(nn.Module):
    """The whole generative model of the rows of a table: x -> z (the VAE's mean, flattened,
    or x itself) -> standardised to s_d; the denoiser models that; back to features by the
    inverse, clipped to the training rows' range. Projecting categoricals is the caller's."""

    def __init__(self, binary: np.ndarray, cfg: DiffusionConfig):
        super().__init__()
        D = len(binary)
        self.vae = ColumnVAE(binary, cfg) if cfg.space == "latent" else None
        L = D * cfg.d_token if self.vae is not None else D
        self.scale = Standardize(L, cfg.sigma_data)
        self.denoiser = Denoiser(L, cfg.width, cfg.sigma_data)
        self.register_buffer("lo", torch.zeros(D))
        self.register_buffer("hi", torch.ones(D))
        self.register_buffer("train_seconds", torch.zeros(()))         # kept with the weights: a cache hit knows it

    def encode(self, x):
        """x (B, D) -> z (B, L), unscaled."""
        return self.vae.encode(x)[0].flatten(1) if self.vae is not None else x

    def to_space(self, x):
        """Features (B, D) -> the diffusion's space (B, L), standard deviation s_d."""
        return self.scale(self.encode(x))

    def space_mask(self, columns):
        """The coordinates of the diffusion's space that hold the given feature columns (D,) bool
        -> (L,) bool: the columns themselves, or their tokens in the latent. (A latent token
        also carries what the encoder's attention drew from other columns.)"""
        columns = torch.as_tensor(columns, dtype=torch.bool)
        return columns.repeat_interleave(len(self.scale.mean) // len(columns))

    def to_features(self, z):
        """The diffusion's space (B, L) -> features (B, D) in the training range, categoricals unprojected."""
        z = self.scale.inverse(z)
        x = self.vae.decode(z.view(len(z), -1, self.vae.tokenize.w.shape[1])) if self.vae is not None else z
        return torch.maximum(torch.minimum(x, self.hi), self.lo)


def minibatch(n: int, size: int, g: torch.Generator):
    """Indices of one random minibatch of min(size, n) distinct rows."""
    return torch.randperm(n, generator=g)[:size]


def train_vae(vae: ColumnVAE, X, cfg: DiffusionConfig, g, verbose: bool):
    """vae_steps Adam steps on vae_loss, the KL weight shrinking geometrically beta_max -> beta_min."""
    def loss_at(step):
        beta = cfg.beta_max * (cfg.beta_min / cfg.beta_max) ** (step / max(cfg.vae_steps - 1, 1))
        x = X[minibatch(len(X), cfg.vae_batch_size, g)]
        return vae_loss(vae, x, torch.randn(len(x), x.shape[1], cfg.d_token, generator=g), beta)
    adam_steps(vae, cfg.vae_lr, cfg.vae_steps, loss_at, "VAE", verbose)
    return vae.eval()


def train_denoiser(denoiser: Denoiser, Z, cfg: DiffusionConfig, g, verbose: bool):
    """train_steps Adam steps on edm_loss over the (scaled) training codes Z (N, L)."""
    def loss_at(step):
        z0 = Z[minibatch(len(Z), cfg.batch_size, g)]
        sigma = (cfg.p_mean + cfg.p_std * torch.randn(len(z0), generator=g)).exp()
        return edm_loss(denoiser, z0, sigma, torch.randn(z0.shape, generator=g))
    adam_steps(denoiser, cfg.lr, cfg.train_steps, loss_at, "denoiser", verbose)
    return denoiser.eval()


def adam_steps(model: nn.Module, lr: float, steps: int, loss_at, label: str, verbose: bool) -> None:
    """`steps` Adam steps on loss_at(step), printing the loss five times along the way."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        loss = loss_at(step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if verbose and (step + 1) % max(1, steps // 5) == 0:
            print(f"    {label} step {step + 1}/{steps}  loss {loss.item():.4f}", flush=True)


def train_diffusion(X, binary, cfg: DiffusionConfig, seed: int, verbose: bool = False) -> TabularDiffusion:
    """Fit the model to the rows X (N, D): the VAE first (space="latent"), then the denoiser on its codes."""
    t0 = time.time()
    set_seed(seed)
    g = torch.Generator().manual_seed(seed)
    X = torch.as_tensor(X)
    model = TabularDiffusion(binary, cfg)
    model.lo.copy_(X.min(dim=0).values)
    model.hi.copy_(X.max(dim=0).values)
    with torch_threads(1):
        if model.vae is not None:
            model.vae.scale.fit(X)
            train_vae(model.vae.train(), X, cfg, g, verbose)
        with torch.no_grad():
            Z = model.encode(X)                                             # (N, L)
            Z = model.scale.fit(Z)(Z)
        train_denoiser(model.denoiser.train(), Z, cfg, g, verbose)
    model.train_seconds.fill_(time.time() - t0)
    return model.eval()


def fit_diffusion(X_pos, binary, cfg: DiffusionConfig, seed: int, cache_dir=None,
                  verbose: bool = False) -> TabularDiffusion:
    """The model of D_h^+ for these rows, settings and seed: trained, or loaded from
    cache_dir/diffusion_<space>_<hash>.pt (the hash covers the rows, the training fields
    of cfg, the binary mask and the seed). Without a cache_dir, always trained."""
    settings = {"model": "diffusion", **{k: getattr(cfg, k) for k in TRAINING_FIELDS},
                "binary": np.asarray(binary).tolist(), "seed": seed}
    path = cache_dir and os.path.join(cache_dir, f"diffusion_{cfg.space}_"
                                                 f"{cache_key(X_pos, np.ones(len(X_pos)), settings)}.pt")
    if path and os.path.exists(path):
        model = TabularDiffusion(binary, cfg)
        model.load_state_dict(torch.load(path, weights_only=True))
        if verbose:
            print(f"    diffusion: loaded {path}", flush=True)
        return model.eval()
    model = train_diffusion(X_pos, binary, cfg, seed, verbose)
    if path:
        write_cache(path, lambda f: torch.save(model.state_dict(), f))
    return model


# ----------------------------------------------------------------------------- sampling

@torch.no_grad()
def sample(denoiser, sigmas, gamma: float, z_init, g):
    """TabSyn's sampler, EDM's stochastic sampler (Karras et al. 2022, Alg. 2): z ~ N(0, sigma_0^2 I),
    then at each noise level churn and a Heun step. sigmas (S + 1,) ending in 0,
    z_init (B, L) ~ N(0, I) -> z0 (B, L). 2 S - 1 denoiser calls."""
    z = sigmas[0] * z_init
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        z_hat, sigma_hat = churn(z, sigma, gamma, torch.randn(z.shape, generator=g))
        z = heun_step(denoiser, z_hat, denoiser(z_hat, sigma_hat.expand(len(z))), sigma_hat, sigma_next)
    return z


def recourse_reward(x_plus, x, immutable, penalty: float):
    """App. D.4: r(x+) = -||x+ - x||_2 - penalty * 1[an immutable of x+ differs from x].
    x_plus (B, M, D), x (B, D), immutable (D,) bool -> (B, M)."""
    changed = (x_plus[..., immutable] != x[:, None, immutable]).any(dim=-1)   # (B, M)
    return -(x_plus - x[:, None]).norm(dim=-1) - penalty * changed.float()


def soft_select(values, lam: float, gumbel):
    """SVDD's resampling: index m with probability exp(lam v_m) / sum_m' exp(lam v_m'), drawn by
    the Gumbel-max trick, argmax_m lam v_m + g_m with g ~ Gumbel(0, 1). values, gumbel (B, M) -> (B,).
    lam = 0: uniform; lam -> inf: the highest value."""
    return (lam * values + gumbel).argmax(dim=1)


def gumbel_noise(shape, g):
    """g = -ln(-ln u), u ~ U(0, 1): Gumbel(0, 1) draws."""
    u = torch.rand(shape, generator=g).clamp(1e-12, 1 - 1e-7)
    return -(-u.log()).log()


def inpaint(z, known, sigma, eps):
    """Conditioning by replacement (Song et al. 2021's imputation; TabSyn imputes this way):
    the known coordinates of z are set to the known clean values noised to the current
    level, z_known + sigma eps. z, eps (B, L); known = (mask (L,) bool, z_known (B, L)).
    Approximate: it under-conditions (for a 2-D Gaussian of correlation 0.8 it moves the
    free coordinate's mean 0.17 where the conditional's is 0.40, see the tests)."""
    mask, z_known = known
    return torch.where(mask, z_known + sigma * eps, z)


@torch.no_grad()
def svdd_sample(denoiser, sigmas, gamma: float, z_init, value, lam: float, M: int, g, g_select, known=None):
    """SVDD-PM (Li et al. 2024, Alg. 1) on TabSyn's sampler. The sampler's randomness is the
    churn, so that is where SVDD chooses: at each noise level draw M churned candidates
    z_hat^m, value each by v(z_hat^m) = r(D(z_hat^m; sigma_hat)), the reward of its denoised
    estimate, keep one with probability ~ exp(lam v) (soft_select), and take the Heun step
    from it. The Heun step is deterministic, so choosing z_hat is choosing the next state.
    z_init (B, L); value: estimates (B, M, L) -> (B, M). M + 1 denoiser calls a level;
    M = 1 is plain sampling (sample), number for number. With `known` (see inpaint) the
    known coordinates are held to the given values at every level."""
    z = sigmas[0] * z_init
    B, L = z.shape
    rows = torch.arange(B)
    if known is not None:
        z = inpaint(z, known, sigmas[0], torch.randn(B, L, generator=g))
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        cand, sigma_hat = churn(z[:, None], sigma, gamma, torch.randn(B, M, L, generator=g))   # (B, M, L)
        cand_hat = denoiser(cand.view(B * M, L), sigma_hat.expand(B * M)).view(B, M, L)
        pick = soft_select(value(cand_hat), lam, gumbel_noise((B, M), g_select)) if M > 1 else rows * 0
        z = heun_step(denoiser, cand[rows, pick], cand_hat[rows, pick], sigma_hat, sigma_next)   # (B, L)
        if known is not None:
            z = inpaint(z, known, sigma_next, torch.randn(B, L, generator=g))
    return z


# ----------------------------------------------------------------------------- the estimators

def refuse_constraints(method, constraints) -> None:
    """Table 4's methods keep no actionability constraints (the paper's guidance has none): a
    one-line ValueError if given some, rather than a recourse that silently breaks them."""
    if constraints is not None:
        raise ValueError(f"{type(method).__name__} keeps no constraints (Table 4's diffusion methods take "
                         "none); leave constraints out")


class _DiffusionRecourse(BaseEstimator, RecourseMethod):
    """What the methods share: fit() trains (or loads) the model of D_h^+; recourse() draws
    n_samples candidates per row and returns the one h rates highest (GenRe's rule)."""

    def fit(self, X, y, h, immutable=None, categorical=None, groups=None, constraints=None, domain=None):
        """X (N, D) scaled features, y (N,) labels in {0, 1}, h any fitted binary classifier (common.column_of_1),
        immutable / categorical (D,) bool masks, groups the column lists of one-hot groups; no constraints;
        domain (constraints.Domain): every candidate rounded to it before h chooses."""
        refuse_constraints(self, constraints)
        if not (np.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam}")
        self.cfg_ = replace(self.cfg) if self.cfg is not None else DiffusionConfig()   # re-runs its checks
        X = check_features(X, np.shape(X)[-1], "training X")
        y = check_labels(y, len(X))
        D = X.shape[1]
        self.immutable_ = as_mask(immutable, D, "immutable")
        self.categorical_ = as_mask(categorical, D, "categorical")
        self.domain_ = as_domain(domain, D)
        self.groups_ = [g.tolist() for g in check_groups(groups, D)]
        for grp in self.groups_:
            self.categorical_[grp] = True
        pos = training_sets(y, check_classifier(h, X), self.cfg_.gamma)[1]   # D_h^+ mask, (N,)
        if not pos.any():
            raise ValueError(f"D_h^+ is empty: no training row has y = 1 and h(x) > gamma = {self.cfg_.gamma}")
        self.h_, self.n_features_in_, self.n_targets_ = h, D, int(pos.sum())
        seed = 0 if self.random_state is None else int(self.random_state)
        self.model_ = fit_diffusion(X[pos], self.categorical_, self.cfg_, seed, self.cache_dir, self.verbose)
        self.train_seconds_ = float(self.model_.train_seconds)
        t1 = time.time()
        self._after_model(X[pos])
        self.fit_seconds_ = self.train_seconds_ + time.time() - t1         # the training's, even when loaded
        return self

    def _after_model(self, X_pos):
        """Anything a method prepares once the model is there (the skyline's D_syn^+)."""

    def _project(self, x, x_orig=None):
        """Categoricals projected (binary -> {0, 1}, a one-hot group -> its arg-max); with
        x_orig, immutables copied from it. x (..., D) tensor -> the same shape."""
        shape = x.shape
        out = torch.from_numpy(project_categoricals(x.reshape(-1, shape[-1]).numpy(), self.categorical_,
                                                    self.groups_)).view(shape)
        if x_orig is not None:
            imm = torch.as_tensor(self.immutable_)
            out = torch.where(imm, x_orig.expand(shape), out)
        return out

    def _in_domain(self, x):
        """The profiles the method returns, rounded to the domain where fit was given one, before
        _project copies the immutables and rounds the categoricals (the guidance between steps
        sees the model's own values). x (..., D) tensor."""
        if self.domain_ is None:
            return x
        return torch.from_numpy(self.domain_.round(x.reshape(-1, x.shape[-1]).numpy())).view(x.shape)

    def _generators(self, stream: int = 0):
        """Two of the sampling's random streams, fresh at each call: the same call, the same numbers."""
        seed = 0 if self.random_state is None else int(self.random_state)
        return (torch.Generator().manual_seed(seed + 1 + 2 * stream),
                torch.Generator().manual_seed(seed + 2 + 2 * stream))

    def _best_by_h(self, X, C):
        """Per row the candidate h rates highest. X (B, D), C (B, n, D) -> (B, D), h's P(y=1) (B,)."""
        B, n, D = C.shape
        p = np.asarray(probability_of_1(self.h_, C.reshape(B * n, D)), dtype=np.float64).reshape(B, n)
        best = p.argmax(axis=1)
        return C[np.arange(B), best], p[np.arange(B), best]

    def recourse(self, X, constraints=None) -> np.ndarray:
        """One recourse per row of X (M, D) -> (M, D) float32; n_failed_ counts the rows that
        miss the method's own success test (see the class). No constraints."""
        refuse_constraints(self, constraints)
        check_fitted(self, "model_")
        X = check_features(X, self.n_features_in_)
        with torch_threads(1):
            X_plus, failed = self._recourse(X)
        self.n_failed_ = int(failed.sum())
        return X_plus.astype(np.float32)


class DiffusionQ(_DiffusionRecourse):
    """The skyline of Table 4 (TabSyn+Q): sample D_syn^+, |D_h^+| rows of the model of D_h^+,
    categoricals projected; for each x draw n_samples partners from

        Q(x+ | x) ~ exp(-lam C(x, x+)) over D_syn^+   (Eq. 6, top-K, C = L1, +inf if an immutable differs)

    and return the one h rates highest. A row that no synthetic row reaches with its
    immutables kept gets x itself. n_failed_: such rows, and rows whose answer h rejects
    (h(x+) <= 0.5). After fit, X_syn_ holds D_syn^+ (N+, D).
    """

    def __init__(self, lam: float = 5.0, cfg: DiffusionConfig | None = None, random_state: int = 0,
                 cache_dir=None, verbose: bool = False):
        self.lam = lam
        self.cfg = cfg
        self.random_state = random_state
        self.cache_dir = cache_dir
        self.verbose = verbose

    def _after_model(self, X_pos):
        """D_syn^+: as many synthetic rows as D_h^+ has, drawn with plain sampling."""
        g, _ = self._generators()
        sigmas, model, out = noise_levels(self.cfg_), self.model_, []
        L = model.scale.mean.shape[0]
        with torch_threads(1), torch.no_grad():
            for s in range(0, len(X_pos), 4096):
                z_init = torch.randn(min(4096, len(X_pos) - s), L, generator=g)
                z = sample(model.denoiser, sigmas, churn_gamma(self.cfg_.s_churn, self.cfg_.n_steps), z_init, g)
                out.append(self._project(self._in_domain(model.to_features(z))))
        self.X_syn_ = torch.cat(out).numpy()                                 # (N+, D)

    def _recourse(self, X):
        g, _ = self._generators(stream=1)
        idx, prob, keep = pairing_distribution(torch.from_numpy(X), torch.from_numpy(self.X_syn_), self.lam,
                                               torch.as_tensor(self.immutable_), self.cfg_.top_k)
        draws = torch.multinomial(prob, self.cfg_.n_samples, replacement=True, generator=g)  # (K, n) into top-T
        C = self.X_syn_[torch.gather(idx.long(), 1, draws).numpy()]          # (K, n, D), K kept rows
        X_plus, failed = X.copy(), np.ones(len(X), dtype=bool)
        keep = keep.numpy()
        if keep.any():
            X_plus[keep], p = self._best_by_h(X[keep], C)
            failed[keep] = p <= 0.5
        return X_plus, failed


class DiffusionSVDD(_DiffusionRecourse):
    """TabSyn+SVDD of Table 4 (App. D.4): n_samples draws per x from the model guided by SVDD
    (svdd_sample) toward P'(x+) ~ P(x+) exp(lam r(x+)), r the reward of App. D.4 on the
    decoded estimate with its categoricals projected; the draw h rates highest is returned.

    keep_immutables=False (the paper's variant): nothing holds the immutables but the
        reward's penalty, so a recourse may change them. n_failed_: rows whose recourse
        h rejects (h(x+) <= 0.5) or that changes an immutable.
    keep_immutables=True: the immutables are held during the reverse process (inpaint: their
        coordinates are x's, noised to each level, so the rest is generated to fit them), and
        every decoded estimate and the answer take x's values exactly (the penalty never
        fires). n_failed_: rows whose recourse h rejects.
    """

    def __init__(self, lam: float = 5.0, keep_immutables: bool = False, cfg: DiffusionConfig | None = None,
                 random_state: int = 0, cache_dir=None, verbose: bool = False):
        self.lam = lam
        self.keep_immutables = keep_immutables
        self.cfg = cfg
        self.random_state = random_state
        self.cache_dir = cache_dir
        self.verbose = verbose

    @torch.no_grad()
    def sample(self, X) -> np.ndarray:
        """n_samples SVDD draws per row of X (B, D) -> (B, n, D), categoricals projected."""
        check_fitted(self, "model_")
        X = check_features(X, self.n_features_in_)
        cfg, model, n = self.cfg_, self.model_, self.cfg_.n_samples
        sigmas, (g, g_select) = noise_levels(cfg), self._generators()
        imm, L = torch.as_tensor(self.immutable_), model.scale.mean.shape[0]
        out = []
        with torch_threads(1):
            for s in range(0, len(X), cfg.chunk):
                x = torch.from_numpy(X[s:s + cfg.chunk]).repeat_interleave(n, dim=0)   # (b n, D)
                held = x[:, None] if self.keep_immutables else None

                def value(z0_hat):                                          # (b n, M, L) -> (b n, M)
                    x_hat = self._project(model.to_features(z0_hat.flatten(0, 1)).view(*z0_hat.shape[:2], -1), held)
                    return recourse_reward(x_hat, x, imm, cfg.penalty)

                known = (model.space_mask(imm), model.to_space(x)) if self.keep_immutables and imm.any() else None
                z = svdd_sample(model.denoiser, sigmas, churn_gamma(cfg.svdd_churn, cfg.n_steps),
                                torch.randn(len(x), L, generator=g), value, self.lam, cfg.n_candidates, g, g_select,
                                known)
                x_plus = self._project(self._in_domain(model.to_features(z)), x if self.keep_immutables else None)
                out.append(x_plus.view(-1, n, x.shape[1]))
        return torch.cat(out).numpy()

    def _recourse(self, X):
        X_plus, p = self._best_by_h(X, self.sample(X))
        failed = p <= 0.5
        if not self.keep_immutables:
            failed |= (X_plus[:, self.immutable_] != X[:, self.immutable_]).any(axis=1)
        return X_plus, failed


def _factory(cls, **fixed):
    """A registry entry: factory(random_state=..., cache_dir=..., verbose=..., **more) -> an unfitted method."""
    return lambda **kwargs: cls(**{**fixed, **kwargs})


# Method name -> factory. The four share one fitted model of D_h^+ when given the same
# random_state, cfg and cache_dir.
DIFFUSION_METHODS = {
    "diffusion_q": _factory(DiffusionQ, lam=5.0),
    "diffusion_svdd5": _factory(DiffusionSVDD, lam=5.0),
    "diffusion_svdd10": _factory(DiffusionSVDD, lam=10.0),
    "diffusion_svdd5_kept": _factory(DiffusionSVDD, lam=5.0, keep_immutables=True),
}
