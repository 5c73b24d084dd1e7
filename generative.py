"""The generative baselines: recourse searched in the latent space of a learned model of the data.

    CCHVAE  (Pawelczyk et al. 2020)  growing L1 shells around a VAE's code z of x
    REVISE  (Joshi et al. 2019)      gradient descent on the VAE's code z
    CRUDS   (Downs et al. 2020)      a CSVAE's code splits into z (free of y) and w (carries y);
                                     z stays at x's code, gradient search moves w

The file reads from the parts to the whole: the settings, the two generative models
(VAE, CSVAE) and their training, the cache, then the three estimators. They keep
common.RecourseMethod's contract, as baselines.py's do (`fit(X, y, h, ...)`, `recourse(X)`,
`n_failed_`), and reuse its search parts (`gradient_search`, `l1_shell_sample`, `FeatureRoles`).

Two modes, as every baseline (baselines.py):
  "designed"  as CARLA's official code designs it: the encoders see only the mutable
              features and the decoders get the immutables as inputs, so a decoded
              recourse keeps them; the VAE's loss is CARLA's (BCE summed + annealed KL).
  "paper"     as the paper's fork ran it: immutables are ordinary inputs; the VAE's
              loss is the fork's (MSE averaged + KL summed, which invites posterior
              collapse); the CSVAE's adversary also steps on the main loss (CARLA's order
              of zero_grad calls).
Either way the recourse returned holds the immutables exactly (copied from x) and its
categoricals projected (binary -> {0, 1}, one-hot group -> its arg-max), and h judges
that point, not the raw decoding. Two things of the paper's runs are left out of the
paper mode on purpose and measured in gaps.py instead: the fork returns the decoded
immutables (its VAE and CSVAE reconstruct them like any feature, so a recourse may change
race or sex), and the runner's glue fits these models on the test split (its data
catalogue's `raw` rows); here they are fitted on the train split. `n_failed_` counts the
rows whose recourse h rejects, the test each of the three searches uses.

Shape letters: B batch, D features, Dm mutable features encoded (D in paper mode),
Di immutables fed to a decoder (0 in paper mode), L the latent z (8), W the latent w
(2), M rows given recourse, n candidates per row and shell.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.base import BaseEstimator

from baselines import accepts, bce_to_one, by_rule_set, check_mode, gradient_search, l1_shell_sample, search_roles
from common import (RecourseMethod, as_mask, check_features, check_fitted, check_labels, project_categoricals,
                    set_seed, torch_threads, write_cache)


# ----------------------------------------------------------------------------- settings

@dataclass
class VAEConfig:
    hidden: tuple = (512, 256)   # Table 8 / CARLA: layers [d, 512, 256, 8]
    latent: int = 8              # Table 8
    lr: float = 1e-3             # Table 8
    weight_decay: float = 1e-6   # Table 8: lambda_reg (Adam's weight decay in CARLA)
    batch_size: int = 32         # Table 8
    epochs: int = 20             # the paper's runner (Table 8 says 100)
    kl_weight: float = 0.3       # CARLA (designed mode): KL weight annealed 0 -> 0.3 over the epochs


@dataclass
class CSVAEConfig:
    hidden: tuple = (512, 256)   # CARLA: layers [d, 512, 256, 8]
    latent: int = 8              # z, Table 8
    w_dim: int = 2               # CARLA: w has one unit per class of the binary label
    lr: float = 5e-4             # CARLA: Adam lr 1e-3 / 2, for both optimisers
    batch_size: int = 32         # Table 8
    epochs: int = 20             # the paper's runner (Table 8 says 100)
    w_recon: float = 40.0        # CARLA csvae_loss: 40 MSE + 0.2 KL_z + 1 KL_w + 110 negentropy
    w_kl_z: float = 0.2
    w_kl_w: float = 1.0
    w_negentropy: float = 110.0
    w_adversary: float = 100.0   # CARLA: the adversary's loss is 100 CE


def layer_config(cfg, layers) -> object:
    """cfg with hidden sizes and latent size from CARLA-style layers (h1, ..., latent)."""
    layers = tuple(int(n) for n in layers)
    if len(layers) < 2 or min(layers) < 1:
        raise ValueError(f"vae_layers must be (hidden..., latent) sizes >= 1, got {layers}")
    return type(cfg)(**{**asdict(cfg), "hidden": layers[:-1], "latent": layers[-1]})


# ----------------------------------------------------------------------------- networks

def mlp(sizes, batchnorm: bool = False) -> nn.Sequential:
    """Linear layers of the given sizes, each followed by (BatchNorm and) ReLU."""
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b)] + ([nn.BatchNorm1d(b)] if batchnorm else []) + [nn.ReLU()]
    return nn.Sequential(*layers)


def reparameterize(mu, logvar, generator):
    """z = mu + sigma * eps, eps ~ N(0, I) drawn from `generator` (deterministic)."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


class VAE(nn.Module):
    """CARLA's VAE: encoder Dm -> 512 -> 256 (Linear, BatchNorm, ReLU) -> mu, log sigma^2 (L);
    decoder (L + Di) -> 256 -> 512 -> Dm, output Linear -> BatchNorm -> Sigmoid.

    `mutable` (D,) bool picks what the encoder sees; the immutables go to the decoder
    beside z (CARLA official). All True gives the fork's VAE (immutables as inputs).
    """

    def __init__(self, mutable: np.ndarray, cfg: VAEConfig):
        super().__init__()
        self.register_buffer("mutable", torch.as_tensor(mutable, dtype=torch.bool))
        n_mut, n_imm = int(mutable.sum()), int((~mutable).sum())
        self.encoder = mlp((n_mut, *cfg.hidden), batchnorm=True)
        self.mu = nn.Linear(cfg.hidden[-1], cfg.latent)
        self.logvar = nn.Linear(cfg.hidden[-1], cfg.latent)
        self.decoder = nn.Sequential(mlp((cfg.latent + n_imm, *cfg.hidden[::-1]), batchnorm=True),
                                     nn.Linear(cfg.hidden[0], n_mut), nn.BatchNorm1d(n_mut), nn.Sigmoid())

    def encode(self, x):
        """q(z|x): x (B, D) -> mu, log sigma^2, each (B, L)."""
        e = self.encoder(x[:, self.mutable])                            # (B, Dm) -> (B, 256)
        return self.mu(e), self.logvar(e)

    def decode(self, z, x):
        """p(x|z): the decoder's mean for the mutables, x's own values for the immutables.
        z (B, L), x (B, D) -> (B, D)."""
        out = self.decoder(torch.cat([z, x[:, ~self.mutable]], dim=1))   # (B, L + Di) -> (B, Dm)
        return x.masked_scatter(self.mutable.expand_as(x), out) if not self.mutable.all() else out

    def forward(self, x, generator):
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar, generator), x), mu, logvar


def kl_to_standard_normal(mu, logvar):
    """KL(N(mu, sigma^2) || N(0, I)) = -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2), summed over
    batch and latent (CARLA's kld)."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def vae_loss(vae: VAE, x, generator, mode: str, beta: float):
    """The ELBO each mode trains with, on a batch x (B, D), only over the encoded features.

    designed (CARLA official): BCE(x_hat, x) summed + beta KL, beta annealed 0 -> 0.3.
    paper (the fork): MSE(x_hat, x) averaged + KL summed. The reconstruction term is
    ~B*Dm times smaller than the KL, so the fork's VAE tends to posterior collapse.
    """
    x_hat, mu, logvar = vae(x, generator)
    cols = vae.mutable
    if mode == "paper":
        return F.mse_loss(x_hat[:, cols], x[:, cols]) + kl_to_standard_normal(mu, logvar)
    recon = F.binary_cross_entropy(x_hat[:, cols], x[:, cols].clamp(0, 1), reduction="sum")
    return recon + beta * kl_to_standard_normal(mu, logvar)


class CSVAE(nn.Module):
    """The conditional-subspace VAE of CRUDS (Klys et al. 2018, as in CARLA), ReLU networks:

        q(z|x)    Dm -> 512 -> 256 -> L          q(w|x,y)   (Dm + 2) -> 512 -> 256 -> W
        p(w|y)    2 -> 512 -> 256 -> W           p(x|z,w)   (L + Di + W) -> 256 -> 512 -> Dm (linear)
        adversary (L + Di) -> 256 -> 512 -> 2 (sigmoid): tries to read y from z

    y enters as a one-hot (B, 2). As the VAE, `mutable` picks what is encoded and the
    immutables go to the decoder (and the adversary) beside z.
    """

    def __init__(self, mutable: np.ndarray, cfg: CSVAEConfig):
        super().__init__()
        self.register_buffer("mutable", torch.as_tensor(mutable, dtype=torch.bool))
        n_mut, n_imm, up = int(mutable.sum()), int((~mutable).sum()), cfg.hidden[::-1]
        heads = lambda size: (nn.Linear(cfg.hidden[-1], size), nn.Linear(cfg.hidden[-1], size))  # mu, log var
        self.enc_z = mlp((n_mut, *cfg.hidden))
        self.z_mu, self.z_logvar = heads(cfg.latent)
        self.enc_w = mlp((n_mut + 2, *cfg.hidden))
        self.w_mu, self.w_logvar = heads(cfg.w_dim)
        self.prior_w = mlp((2, *cfg.hidden))
        self.p_mu, self.p_logvar = heads(cfg.w_dim)
        self.decoder = nn.Sequential(mlp((cfg.latent + n_imm + cfg.w_dim, *up)), nn.Linear(up[-1], n_mut))
        self.adversary = nn.Sequential(mlp((cfg.latent + n_imm, *up)), nn.Linear(up[-1], 2), nn.Sigmoid())

    def encode_z(self, x):
        """q(z|x): x (B, D) -> mu, log sigma^2, each (B, L)."""
        e = self.enc_z(x[:, self.mutable])
        return self.z_mu(e), self.z_logvar(e)

    def encode_w(self, x, y1h):
        """q(w|x,y) and the prior p(w|y): each a pair mu, log sigma^2 of (B, W)."""
        e = self.enc_w(torch.cat([x[:, self.mutable], y1h], dim=1))              # (B, 256)
        p = self.prior_w(torch.eye(2))[y1h.argmax(dim=1)]      # two labels: the prior runs twice, (B, 256)
        return (self.w_mu(e), self.w_logvar(e)), (self.p_mu(p), self.p_logvar(p))

    def decode(self, z, w, x):
        """p(x|z,w)'s mean for the mutables, x's own immutables. z (B, L), w (B, W) -> (B, D)."""
        out = self.decoder(torch.cat([z, x[:, ~self.mutable], w], dim=1))      # (B, Dm)
        return x.masked_scatter(self.mutable.expand_as(x), out) if not self.mutable.all() else out

    def read_y(self, z, x):
        """The adversary's guess of y from z (and the immutables): (B, 2) probabilities."""
        return self.adversary(torch.cat([z, x[:, ~self.mutable]], dim=1))


def kl_gaussians(mu_q, logvar_q, mu_p, logvar_p):
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) of diagonal Gaussians, summed over batch and dims:
    1/2 sum(log var_p - log var_q + (var_q + (mu_q - mu_p)^2) / var_p - 1)."""
    return 0.5 * torch.sum(logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1)


def csvae_losses(csvae: CSVAE, x, y1h, generator, cfg: CSVAEConfig):
    """CARLA's csvae_loss on a batch x (B, D), y1h (B, 2): (main loss, adversary loss).

    main = 40 MSE(x_hat, x) + 0.2 KL(q(z|x) || N(0, I)) + KL(q(w|x,y) || p(w|y))
           + 110 negentropy(adversary(z))     (the encoder makes z useless for reading y)
    adversary = 100 CE(adversary(z), y) (it trains the adversary only).
    """
    z_mu, z_logvar = csvae.encode_z(x)
    (w_mu, w_logvar), (p_mu, p_logvar) = csvae.encode_w(x, y1h)
    z, w = reparameterize(z_mu, z_logvar, generator), reparameterize(w_mu, w_logvar, generator)
    x_hat = csvae.decode(z, w, x)                                              # (B, D)
    p = csvae.read_y(z, x).clamp(1e-6, 1 - 1e-6)                               # (B, 2)
    negentropy = (p * p.log() + (1 - p) * (1 - p).log()).mean()
    main = (cfg.w_recon * F.mse_loss(x_hat, x) + cfg.w_kl_z * kl_to_standard_normal(z_mu, z_logvar)
            + cfg.w_kl_w * kl_gaussians(w_mu, w_logvar, p_mu, p_logvar) + cfg.w_negentropy * negentropy)
    adversary = cfg.w_adversary * -(p.log() * y1h).sum(dim=1).mean()
    return main, adversary


# ----------------------------------------------------------------------------- training

def minibatches(n: int, batch_size: int, generator):
    """Index tensors of one shuffled epoch; a last batch of one row is dropped (BatchNorm)."""
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if len(idx) > 1:
            yield idx


def train_loop(model, step, n_rows: int, cfg, generator, verbose: bool, name: str):
    """cfg.epochs passes of step(batch_index, epoch) -> loss over shuffled minibatches."""
    t0 = time.time()
    model.train()
    with torch_threads(1):
        for epoch in range(cfg.epochs):
            total, count = 0.0, 0
            for idx in minibatches(n_rows, cfg.batch_size, generator):
                total += step(idx, epoch)
                count += 1
            if verbose:
                print(f"    {name} epoch {epoch + 1}/{cfg.epochs}  loss {total / max(count, 1):.4f}  "
                      f"{time.time() - t0:.1f}s", flush=True)
    return model.eval()


def train_vae(X, mutable, cfg: VAEConfig, mode: str, seed: int, verbose: bool = False) -> VAE:
    """Fit the VAE on the training rows X (N, D): Adam, weight decay, batches of 32."""
    set_seed(seed)
    vae, X_t, g = VAE(mutable, cfg), torch.as_tensor(X), torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)

    def step(idx, epoch):
        loss = vae_loss(vae, X_t[idx], g, mode, beta=cfg.kl_weight * epoch / cfg.epochs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()
    return train_loop(vae, step, len(X_t), cfg, g, verbose, f"VAE ({mode})")


def train_csvae(X, y, mutable, cfg: CSVAEConfig, mode: str, seed: int, verbose: bool = False) -> CSVAE:
    """Fit the CSVAE: one Adam for the encoders, prior and decoder (main loss), one for the
    adversary. Paper mode keeps CARLA's quirk: the adversary's step also carries the main
    loss's gradient (its zero_grad runs before, not after, the main backward pass)."""
    set_seed(seed)
    csvae, X_t, g = CSVAE(mutable, cfg), torch.as_tensor(X), torch.Generator().manual_seed(seed)
    Y = F.one_hot(torch.as_tensor(y, dtype=torch.long), 2).float()            # (N, 2)
    adv_params = list(csvae.adversary.parameters())
    main_params = [p for n, p in csvae.named_parameters() if not n.startswith("adversary.")]
    opt_main = torch.optim.Adam(main_params, lr=cfg.lr, fused=True)
    opt_adv = torch.optim.Adam(adv_params, lr=cfg.lr, fused=True)

    def step(idx, epoch):
        main, adversary = csvae_losses(csvae, X_t[idx], Y[idx], g, cfg)
        adv_grads = torch.autograd.grad(adversary, adv_params, retain_graph=True)   # adversary only
        opt_main.zero_grad()
        opt_adv.zero_grad()
        main.backward()                             # also reaches the adversary, through the negentropy
        for p, grad in zip(adv_params, adv_grads):  # designed: the adversary learns from its own loss only
            p.grad = grad if mode == "designed" else p.grad + grad
        opt_main.step()
        opt_adv.step()
        return main.item()
    return train_loop(csvae, step, len(X_t), cfg, g, verbose, f"CSVAE ({mode})")


# ----------------------------------------------------------------------------- cache

def cache_key(X, y, settings: dict) -> str:
    """A hash of the training data and every setting that changes the trained model."""
    digest = hashlib.sha1()
    for a in (np.ascontiguousarray(X, np.float32), np.ascontiguousarray(y, np.int64)):
        digest.update(a.tobytes())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def cached_model(build, train, X, y, settings: dict, cache_dir, name: str, verbose: bool):
    """train() the model, or load its weights from cache_dir/<name>_<hash>.pt into build().
    Without a cache_dir, always train."""
    path = cache_dir and os.path.join(cache_dir, f"{name}_{cache_key(X, y, settings)}.pt")
    if path and os.path.exists(path):
        model = build()
        model.load_state_dict(torch.load(path, weights_only=True))
        if verbose:
            print(f"    {name}: loaded {path}", flush=True)
        return model.eval()
    model = train()
    if path:
        write_cache(path, lambda f: torch.save(model.state_dict(), f))
    return model


def active_units(model, X, threshold: float = 0.01) -> int:
    """Latent units the encoder uses (Burda et al. 2016): unit u is active if the variance
    over the rows of X of its posterior mean, Var_x E_q[z_u | x], exceeds 0.01. A VAE whose
    posterior collapsed to its prior has none: every x encodes to the same code."""
    with torch.no_grad():
        encode = model.encode if isinstance(model, VAE) else model.encode_z
        mu = encode(torch.as_tensor(X))[0]                                      # (N, L)
    return int((mu.var(dim=0) > threshold).sum())


# ----------------------------------------------------------------------------- the estimators

class _LatentRecourse(BaseEstimator, RecourseMethod):
    """What the three share: fit() keeps h and the feature roles and trains (or loads) the
    generative model; recourse() checks X, runs the method's search, counts failures."""

    needs_logits = True       # REVISE and CRUDS descend h's gradients (baselines.search_roles)

    def _store(self, arguments: dict) -> None:
        """What __init__ does: store its arguments as attributes, nothing else (scikit-learn)."""
        for name, value in arguments.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    def fit(self, X, y, h, immutable=None, categorical=None, groups=None, constraints=None, domain=None):
        """Train (or load) the generative model; constraints (a lender's rules) and the domain
        are kept in the designed mode, as every baseline's (baselines.search_roles)."""
        self.roles_ = search_roles(self, X, y, h, immutable, categorical, groups, constraints, domain)
        X, y = check_features(X, np.shape(X)[-1], "training X"), check_labels(y, len(X))
        self.immutable_ = self.roles_.immutable
        if self.immutable_.all():
            raise ValueError("every feature is immutable: there is nothing a recourse could change")
        # As designed, only the mutables of the data set are encoded (a constraint's fixed
        # features are held like immutables, the model stays the same); the fork encodes every feature.
        data_immutable = as_mask(immutable, X.shape[1], "immutable")
        self.encoded_ = ~data_immutable if self.mode == "designed" else np.ones_like(data_immutable)
        self.model_ = self._fit_model(X, y)
        self.active_units_ = active_units(self.model_, X)
        return self

    def recourse(self, X, constraints=None) -> np.ndarray:
        """One recourse per row of X (M, D); constraints: a person's own limits for this call,
        kept in the designed mode (baselines.by_rule_set)."""
        check_fitted(self, "model_")
        X = torch.as_tensor(check_features(X, len(self.immutable_)))           # (M, D)
        with torch_threads(1):
            X_plus = by_rule_set(self, X, constraints, self._search)
        self.n_failed_ = int((~accepts(self.h_, X_plus)).sum())
        return X_plus.numpy().astype(np.float32)

    def _round(self, x):
        """Categoricals projected (no gradient flows through them, as CARLA's rounding);
        the other features keep their gradient. (B, D) -> (B, D)."""
        cat = torch.as_tensor(self.roles_.categorical)
        if not cat.any():
            return x
        proj = project_categoricals(x.detach().numpy(), self.roles_.categorical, self.roles_.groups)
        return torch.where(cat, torch.as_tensor(proj), x)

    def _vae(self, X, y) -> VAE:
        """The VAE of this data, seed and mode: one model shared by CCHVAE and REVISE."""
        cfg = layer_config(VAEConfig(epochs=self.vae_epochs), self.vae_layers)
        settings = {"model": "vae", **asdict(cfg), "mode": self.mode, "seed": self.random_state,
                    "encoded": self.encoded_.tolist()}
        return cached_model(lambda: VAE(self.encoded_, cfg),
                            lambda: train_vae(X, self.encoded_, cfg, self.mode, self.random_state,
                                              self.verbose),
                            X, y, settings, self.cache_dir, f"vae_{self.mode}", self.verbose)


class CCHVAE(_LatentRecourse):
    """CCHVAE (Pawelczyk et al. 2020): growing L1 shells in a VAE's latent space.

    From z0 = mu_enc(x), shell s (lo = s * step, hi = lo + step) holds n codes
    z = z0 + r u / ||u||_1 (u ~ N(0, I), r ~ U[lo, hi)); each is decoded, its categoricals
    rounded, clipped to [0, 1] and its immutables copied from x. The first shell holding
    a positive (h > 0.5) gives the answer: its positive nearest x in L1. A row with no
    positive after max_iter shells gets the first candidate of its last shell (the fork;
    counted in n_failed_). Table 8 / CARLA: n = 100, step 0.1, max_iter 1000. It asks h only
    whether it accepts each candidate, so any fitted classifier serves as h.
    """

    needs_logits = False

    def __init__(self, mode: str = "designed", random_state: int = 0, vae_epochs: int = 20,
                 cache_dir=None, verbose: bool = False, n_search_samples: int = 100,
                 step: float = 0.1, max_iter: int = 1000, vae_layers=(512, 256, 8)):
        self._store(locals())

    def _fit_model(self, X, y):
        return self._vae(X, y)

    @torch.no_grad()
    def _candidates(self, Z, X):
        """Decode codes Z (A, n, L) of rows X (A, D) into what a user would get: (A, n, D)."""
        A, n, L = Z.shape
        x_rep = X.repeat_interleave(n, dim=0)                                    # (A n, D)
        x = self._round(self.model_.decode(Z.reshape(A * n, L), x_rep))       # CARLA: round, then clip
        x = self.roles_.hold(x, x_rep, clamp=True)
        if self.roles_.constraints is not None:                                 # and keep the rules
            x = self.roles_.project(x, x_rep, clamp=True)
        return x.view(A, n, -1)

    @torch.no_grad()
    def _search(self, X):
        g = torch.Generator().manual_seed(self.random_state)
        z0 = self.model_.encode(X)[0]                                           # (M, L)
        X_plus, todo = X.clone(), torch.arange(len(X))
        for shell in range(self.max_iter):
            lo = shell * self.step
            Z = l1_shell_sample(z0[todo], lo, lo + self.step, self.n_search_samples, g)   # (A, n, L)
            cand = self._candidates(Z, X[todo])                                 # (A, n, D)
            positive = accepts(self.h_, cand.flatten(0, 1)).view(len(todo), -1)   # (A, n)
            dist = (cand - X[todo, None]).abs().sum(dim=2).masked_fill(~positive, float("inf"))
            hit = positive.any(dim=1)                                           # (A,)
            pick = torch.where(hit, dist.argmin(dim=1), 0)                      # failures: the first
            X_plus[todo] = cand[torch.arange(len(todo)), pick]
            todo = todo[~hit]
            if len(todo) == 0:
                break
        return X_plus


class REVISE(_LatentRecourse):
    """REVISE (Joshi et al. 2019): gradient descent on a VAE's code z, from z0 = mu_enc(x):

        z* = argmin_z  BCE(h(x~), 1) + lam ||x~ - x||_1,   x~ = round(dec(z))

    (x~ holds x's immutables). CARLA runs all n_iter Adam steps and returns the valid
    iterate (h(x~) > 0.5) of lowest loss, else x itself (counted in n_failed_).
    CARLA / the runner: lam 0.5, Adam lr 0.1, 1500 steps.
    """

    def __init__(self, mode: str = "designed", random_state: int = 0, vae_epochs: int = 20,
                 cache_dir=None, verbose: bool = False, lam: float = 0.5, lr: float = 0.1,
                 n_iter: int = 1500, vae_layers=(512, 256, 8)):
        self._store(locals())

    def _fit_model(self, X, y):
        return self._vae(X, y)

    def _search(self, X):
        z0 = self.model_.encode(X)[0].detach()                                  # (M, L)
        decode = lambda z: self._round(self.model_.decode(z, X))                # (M, L) -> (M, D)
        loss_fn = lambda z, x, lam: bce_to_one(self.h_(x)) + lam * (x - X).abs().sum(dim=1)   # (M,)
        X_plus, found, _ = gradient_search(z0, loss_fn, self.roles_, X, h=self.h_, decode=decode,
                                           lams=(self.lam,), optimizer="adam", lr=self.lr,
                                           n_iter=self.n_iter, stop="never", keep_best=True)
        return torch.where(found[:, None], X_plus, X)


class CRUDS(_LatentRecourse):
    """CRUDS (Downs et al. 2020): edit the label-carrying latent w of a CSVAE, z held fixed.

    z = mu_z(x) stays fixed; w starts ~ U(0, 1)^W and takes n_iter RMSprop steps on

        BCE(h(x~), 1) + lam ||x~ - x||_2^2,   x~ = round(dec(z, w))

    (x~ holds x's immutables). Returns the valid iterate of lowest loss, else the last
    (counted in n_failed_). Table 8: lam 0.001, RMSprop lr 0.008, 2000 steps; the
    paper's Figure 4 sweeps lam over {0.5, 1, 2.5, 5, 10}. The decoder's output is
    linear: as designed, x~ is clamped to the data's range [0, 1]; the fork does not clamp.
    After recourse(), z_, w0_ and w_ hold the last search's codes (M, L), (M, W), (M, W).
    """

    def __init__(self, mode: str = "designed", random_state: int = 0, vae_epochs: int = 20,
                 cache_dir=None, verbose: bool = False, lam: float = 0.001, lr: float = 0.008,
                 n_iter: int = 2000, vae_layers=(512, 256, 8)):
        self._store(locals())

    def _fit_model(self, X, y):
        cfg = layer_config(CSVAEConfig(epochs=self.vae_epochs), self.vae_layers)
        settings = {"model": "csvae", **asdict(cfg), "mode": self.mode, "seed": self.random_state,
                    "encoded": self.encoded_.tolist()}
        return cached_model(lambda: CSVAE(self.encoded_, cfg),
                            lambda: train_csvae(X, y, self.encoded_, cfg, self.mode, self.random_state,
                                                self.verbose),
                            X, y, settings, self.cache_dir, f"csvae_{self.mode}", self.verbose)

    def _search(self, X):
        g = torch.Generator().manual_seed(self.random_state)
        self.z_ = self.model_.encode_z(X)[0].detach()                          # (M, L), never moves
        self.w0_ = torch.rand(len(X), self.model_.w_mu.out_features, generator=g)   # (M, W)
        decode = lambda w: self._round(self.model_.decode(self.z_, w, X))       # (M, W) -> (M, D)
        loss_fn = lambda w, x, lam: bce_to_one(self.h_(x)) + lam * ((x - X) ** 2).sum(dim=1)   # (M,)
        X_plus, _, self.w_ = gradient_search(self.w0_, loss_fn, self.roles_, X, h=self.h_, decode=decode,
                                             lams=(self.lam,), optimizer="rmsprop", lr=self.lr,
                                             n_iter=self.n_iter, clamp=self.mode == "designed",
                                             stop="never", keep_best=True)
        return X_plus


GENERATIVE_METHODS = {"cchvae": CCHVAE, "revise": REVISE, "cruds": CRUDS}
