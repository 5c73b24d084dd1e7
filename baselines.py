"""Baseline recourse methods: nearest-neighbour recourse (Sec. 5.5), then the search
and robust methods of the paper's Table 2 in its order: Wachter (Eq. 2), Growing
Spheres, DiCE, ROAR, PROBE and TAP. (The generative ones live in generative.py.)

Every method here, and GenRe in genre.py, keeps the contract common.RecourseMethod
writes down (and declares it), in scikit-learn's style, so evaluate.py treats them alike:

    method = Method(mode="designed", random_state=0, **hyperparameters)   # stores arguments only
    method.fit(X, y, h, immutable=mask, categorical=mask, groups=groups)   # returns self
    X_plus = method.recourse(X_neg)             # (M, D): one recourse per row
    method.n_failed_                            # rows that miss the method's own success test

X is min-max scaled (N, D) float32, y the labels in {0, 1}, h the classifier
(never trained here), the masks (D,) bool and groups a list of one-hot column lists.
The gradient searches need h as a torch module giving logits, with `predict_proba`;
NNR and Growing Spheres ask h only for predictions, so any fitted binary classifier
serves them (ANY_CLASSIFIER names every such method). get_params and set_params are
scikit-learn's (BaseEstimator), so sklearn.base.clone copies an unfitted method.
mode="designed" is each method as its authors designed it; mode="paper" is how
the paper's Table 2 ran it (a patched CARLA fork, MartinPawel/ProbabilisticallyRobustRecourse):
its quirks are described in each class. Both modes hold immutables exactly,
project categoricals, and replace CARLA's wall-clock timers by iteration caps, so a
fixed random_state gives the same numbers. `n_failed_` counts the rows whose returned
recourse misses the method's own success test (h(x+) > 0.5 for most; PROBE adds its
invalidation test, TAP its verifier, designed ROAR its robust surrogate, DiCE needs all
of its candidates valid); the fork turns such rows into NaN (CARLA's check_counterfactuals)
where h rejects them, and returns them as they are where only the extra test fails.
"""
from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import torch
from sklearn.base import BaseEstimator

from common import (RecourseMethod, as_mask, check_classifier, check_features, check_fitted, check_groups,
                    check_labels, l1_cost, probability_of_1, project_categoricals, write_cache)
from constraints import Constraints, as_constraints, as_domain, lender_rules
from genre import training_sets


# ----------------------------------------------------------------------------- NNR (Sec. 5.5)

def nearest(X_src: np.ndarray, X_dst: np.ndarray, immutable: np.ndarray, chunk: int = 2048, rules=None):
    """Index of the nearest row of X_dst (L1, immutables matching) for each row of X_src.

    Returns (indices (S,), costs (S,)); the cost is inf where no row of X_dst keeps
    the immutables of the source (or, with rules, a constraints.Constraints, every rule).
    """
    src, dst = torch.as_tensor(X_src), torch.as_tensor(X_dst)
    imm = torch.as_tensor(immutable)
    idx, costs = [], []
    for start in range(0, len(src), chunk):                  # chunks bound the (S, T) matrix
        cost = l1_cost(src[start:start + chunk], dst, imm)
        breaks = None if rules is None else rules.pair_breaks(src[start:start + chunk], dst,
                                                              rows=slice(start, start + chunk))
        cost, i = (cost if breaks is None else cost.masked_fill(breaks, float("inf"))).min(dim=1)
        idx.append(i)
        costs.append(cost)
    return torch.cat(idx).numpy(), torch.cat(costs).numpy()


class NNR(BaseEstimator, RecourseMethod):
    """Nearest-neighbour recourse (Sec. 5.5): return the closest training instance in a pool.

    pool="label":  training rows with y = 1                    (NNR)
    pool="h":      training rows with h(x) > gamma             (NNR, gamma > 0.7)
    pool="dhplus": rows with y = 1 and h(x) > gamma = D_h^+    (NNR (D_h^+))

    L1 distance; a candidate must match every immutable feature of x, and keep every
    constraint it is given (at fit, or at recourse for this call). The pool holds real
    data points, so categoricals are valid by construction. If no pool row qualifies,
    x itself is returned (an invalid recourse, counted in `n_failed_`).
    """

    def __init__(self, pool: str = "dhplus", gamma: float = 0.7):
        self.pool = pool
        self.gamma = gamma

    def fit(self, X, y, h, immutable=None, categorical=None, groups=None, constraints=None, domain=None) -> "NNR":
        """The pool of candidates; domain (constraints.Domain) rounds the fallback for a row no
        candidate serves under its constraints (the pool's rows are data rows, in it already)."""
        if self.pool not in ("label", "h", "dhplus"):
            raise ValueError(f"unknown pool {self.pool!r}; use 'label', 'h' or 'dhplus'")
        X = check_features(X, np.shape(X)[-1], "training X")
        y, p = check_labels(y, len(X)), check_classifier(h, X)  # p = h(x), (N,)
        keep = {
            "label": y == 1,
            "h": p > self.gamma,
            "dhplus": training_sets(y, p, self.gamma)[1],         # GenRe's D_h^+
        }[self.pool]
        if not keep.any():
            raise ValueError(f"NNR pool {self.pool!r} is empty: no training row qualifies "
                             f"(try a lower gamma than {self.gamma})")
        self.pool_ = X[keep]                                  # (P, D)
        self.immutable_ = as_mask(immutable, X.shape[1], "immutable")
        self.constraints_ = lender_rules(self.immutable_, constraints)
        self.immutable_ = self.constraints_.fixed
        self.categorical_ = as_mask(categorical, X.shape[1], "categorical")
        self.groups_ = check_groups(groups, X.shape[1])
        self.domain_ = as_domain(domain, X.shape[1])
        return self

    def recourse(self, X, constraints=None) -> np.ndarray:
        check_fitted(self, "pool_")
        X = check_features(X, self.pool_.shape[1])
        rules = self.constraints_ & as_constraints(constraints, len(X), X.shape[1])
        fixed = np.broadcast_to(rules.fixed, X.shape)
        ruled = rules.beyond_fixed() or bool((fixed & ~self.immutable_).any())
        idx, cost = nearest(X, self.pool_, self.immutable_, rules=rules if ruled else None)
        found = np.isfinite(cost)
        self.n_failed_ = int((~found).sum())
        fallback = rules.project(X, X, self.categorical_, self.groups_) if ruled else X   # x, or the nearest point keeping the rules
        if ruled and self.domain_ is not None:
            fallback = np.where(fixed, X, self.domain_.round(fallback, *rules.bounds(X)))
        return np.where(found[:, None], self.pool_[idx], fallback)


def accepts(h, X: torch.Tensor) -> torch.Tensor:
    """Whether h accepts each row, P(y = 1 | x) > 0.5: X (..., D) -> (...) bool, no gradient.
    A torch module (this project's h) is asked for its logit, > 0, which is the same decision
    without sigmoid's rounding of logits within float32's epsilon of 0 to 0.5; any other
    classifier for its probabilities (common.probability_of_1)."""
    with torch.no_grad():
        if isinstance(h, torch.nn.Module):
            return h(X) > 0.0
        p = probability_of_1(h, X.reshape(-1, X.shape[-1]).cpu().numpy())
        return torch.as_tensor(p > 0.5, device=X.device).reshape(X.shape[:-1])


def bce_to_one(logits: torch.Tensor) -> torch.Tensor:
    """BCE(h(x), 1) = -log sigmoid(logit) = softplus(-logit), computed stably, (M,)."""
    return torch.nn.functional.softplus(-logits)


def bce_to_target(logits: torch.Tensor, t: float) -> torch.Tensor:
    """BCE(h(x), t) = -t log h(x) - (1 - t) log(1 - h(x)) = t softplus(-l) + (1 - t) softplus(l),
    smallest at h(x) = t; t = 1 is bce_to_one. (M,) -> (M,)."""
    return t * torch.nn.functional.softplus(-logits) + (1 - t) * torch.nn.functional.softplus(logits)


# ----------------------------------------------------------------------------- shared search parts
# Letters: M rows searched at once, D features, k the searched variable's width
# (k = D when the search moves x itself, a latent size when it moves a code z),
# n samples per row.

MODES = ("designed", "paper")


def check_mode(mode: str) -> str:
    """'designed' = the method as its authors designed it; 'paper' = as the paper's fork ran it."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use 'designed' or 'paper'")
    return mode


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """'adam', 'amsgrad' (Adam with amsgrad, CARLA's Wachter) or 'rmsprop'. All act per
    element, so a batched search of M rows moves each row as its own search would."""
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(params, lr=lr, amsgrad=name == "amsgrad")
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; use 'adam', 'amsgrad' or 'rmsprop'")


class FeatureRoles:
    """The feature roles every search respects, and the map from a search point to what the
    user receives: immutables copied from x, mutables optionally clamped to [0, 1] and to
    the constraints' bounds, categoricals projected (binary -> {0, 1}, one-hot group -> its
    arg-max), then every constraint kept (constraints.Constraints.project)."""

    def __init__(self, immutable, categorical=None, groups=(), constraints=None, domain=None):
        self.domain = domain                                                # constraints.Domain or None
        self.immutable = np.asarray(immutable, dtype=bool)                 # (D,)
        self.categorical = np.zeros_like(self.immutable) if categorical is None \
            else np.asarray(categorical, dtype=bool)                        # (D,)
        self.groups = [list(g) for g in groups or []]
        self.constraints = constraints                                      # one set (D,) or None
        if constraints is not None:
            self.immutable = self.immutable | constraints.fixed

    def bounds(self, x_orig: torch.Tensor):
        """Each row's interval [L, U] (M, D) as tensors, or None without constraints."""
        if self.constraints is None:
            return None
        L, U = self.constraints.bounds(x_orig.detach().cpu().numpy())
        return torch.tensor(L, dtype=x_orig.dtype), torch.tensor(U, dtype=x_orig.dtype)

    def hold(self, x: torch.Tensor, x_orig: torch.Tensor, clamp: bool) -> torch.Tensor:
        """Immutables copied exactly from x_orig; mutables clamped to [0, 1] if asked, and the
        continuous ones to the constraints' bounds. (M, D)."""
        imm = torch.as_tensor(self.immutable, device=x.device)
        if clamp:
            x = torch.where(imm, x, x.clamp(0, 1))
        bounds = self.bounds(x_orig)
        if bounds is not None:
            cont = torch.as_tensor(~self.categorical, device=x.device)
            x = torch.where(cont, torch.minimum(torch.maximum(x, bounds[0]), bounds[1]), x)
        return torch.where(imm, x_orig, x)

    def project(self, x: torch.Tensor, x_orig: torch.Tensor, clamp: bool) -> torch.Tensor:
        """hold(), then projectCategoricals (Algorithm 2) and the constraints; no gradient. (M, D) -> (M, D)."""
        x = self.hold(x.detach(), x_orig, clamp)
        out = project_categoricals(x.cpu().numpy(), self.categorical, self.groups)
        if self.constraints is not None:
            out = self.constraints.project(x_orig.detach().cpu().numpy(), out, self.categorical, self.groups)
        return torch.as_tensor(out, device=x.device)

    def with_constraints(self, constraints) -> "FeatureRoles":
        """These roles with one more set of rules (one set for every row)."""
        rules = constraints if self.constraints is None else self.constraints & constraints
        return FeatureRoles(self.immutable, self.categorical, self.groups, rules, self.domain)

    def in_domain(self, x: torch.Tensor, x_orig: torch.Tensor) -> torch.Tensor:
        """The mutables of x (M, D) rounded to the domain's values (whole numbers whole), inward
        inside the constraints' bounds (constraints.Domain.round); immutables as x_orig."""
        x_orig_np = x_orig.detach().cpu().numpy()
        bounds = () if self.constraints is None else self.constraints.bounds(x_orig_np)
        rounded = torch.as_tensor(self.domain.round(x.detach().cpu().numpy(), *bounds), device=x.device)
        return torch.where(torch.as_tensor(self.immutable, device=x.device), x_orig, rounded.to(x.dtype))


def gradient_search(v0, loss_fn, roles: FeatureRoles, x_orig, *, h=None, decode=None,
                    mutable=None, lams=(0.0,), optimizer="adam", lr=0.01, n_iter=1000,
                    clamp=False, success=None, stop="step", keep_best=False, rank=None,
                    judge="projected"):
    """One batched gradient search, shared by Wachter, DiCE, ROAR, PROBE and TAP (and, with
    `decode`, by the latent searches REVISE and CRUDS).

    v0 (M, k): the starting variable; decode(v) -> x (M, D) maps it to features (identity
    by default, so v is x). Each step: x = roles.hold(decode(v)) (immutables copied from
    x_orig, mutables clamped if `clamp`), then the caller's per-row loss
    loss_fn(v, x, lam) -> (M,) is minimised for one step; `mutable` (k,) zeroes the gradient
    of coordinates that must not move (default: all move when decode is given, else the
    mutable features). Round r runs at most n_iter steps with weight lams[r].
    A row succeeds when success(x_hat, loss) -> (M,) bool holds on the point the user would
    get, x_hat = roles.project(x) (default: h(x_hat) > 0.5, i.e. logit > 0); judge="raw"
    tests the search point x itself, before the categorical projection (the fork's PROBE).
    stop="step": a row is frozen at its first success (CARLA's searches); stop="round": the
    test runs once, on a round's last iterate (the fork's PROBE); stop="never": every row runs
    every step of the round and, if keep_best, the successful iterate of lowest rank(x_hat)
    (default: its loss) is kept (REVISE, CRUDS, TAP). Rows that succeeded skip later rounds.
    Returns (x_plus (M, D) projected, found (M,) bool, v (M, k) final variable).
    """
    if mutable is None:                                   # a latent moves freely; x only where mutable
        mutable = ~roles.immutable if decode is None else np.ones(v0.shape[1], bool)
    if stop not in ("step", "round", "never"):
        raise ValueError(f"unknown stop rule {stop!r}; use 'step', 'round' or 'never'")
    if judge not in ("projected", "raw"):
        raise ValueError(f"unknown judge {judge!r}; use 'projected' or 'raw'")
    decode = decode or (lambda v: v)
    success = success or (lambda x_hat, loss: h(x_hat) > 0.0)
    grad_mask = torch.as_tensor(mutable, dtype=v0.dtype, device=v0.device)        # (k,)
    v = v0.detach().clone().requires_grad_(True)                                   # (M, k)
    opt = make_optimizer(optimizer, [v], lr)
    rows = _Progress(x_orig)
    for lam in lams:
        for it in range(n_iter + (stop == "round")):                             # +1: test the last iterate
            x = roles.hold(decode(v), x_orig, clamp)                               # (M, D)
            loss = loss_fn(v, x, lam)                                              # (M,)
            if stop != "round" or it == n_iter:
                with torch.no_grad():
                    x_hat = roles.project(x, x_orig, clamp)
                    ok = success(x_hat if judge == "projected" else x.detach(), loss.detach())
                    rank_now = None if not keep_best else loss.detach() if rank is None else rank(x_hat)
                    rows.record(ok, x_hat, rank_now, freeze=stop == "step")
            if not rows.active.any() or it == n_iter:
                break
            _step(opt, v, loss, grad_mask, rows.active)
        rows.active &= ~rows.found                                                 # next round: failures only
        if not rows.active.any():
            break
    with torch.no_grad():
        x_last = roles.project(roles.hold(decode(v), x_orig, clamp), x_orig, clamp)
        x_plus = torch.where(rows.kept[:, None], rows.best_x, x_last)
    return x_plus, rows.found, v.detach()


class _Progress:
    """Per-row bookkeeping of gradient_search: still searching, ever succeeded, and the
    successful iterate of lowest rank seen so far (for keep_best)."""

    def __init__(self, x_orig: torch.Tensor):
        M = len(x_orig)
        self.active = torch.ones(M, dtype=torch.bool, device=x_orig.device)        # (M,)
        self.found = torch.zeros_like(self.active)                                 # (M,)
        self.kept = torch.zeros_like(self.active)                                  # (M,) best_x holds one
        self.best_x = torch.zeros_like(x_orig)                                     # (M, D)
        self.best_rank = torch.full((M,), float("inf"), device=x_orig.device)      # (M,)

    def record(self, ok, x_hat, rank, freeze: bool) -> None:
        ok = ok & self.active
        if rank is not None:                                                       # keep_best
            better = ok & (rank < self.best_rank)
            self.best_x[better], self.best_rank[better] = x_hat[better], rank[better]
            self.kept |= better
        self.found |= ok
        if freeze:
            self.active &= ~ok


def _step(opt, v, loss, grad_mask, active) -> None:
    """One optimiser step on the summed per-row loss; frozen rows are put back where they were."""
    grad, = torch.autograd.grad(loss.sum(), v)                  # h's weights get no gradient
    v.grad = grad * grad_mask                                   # masked coordinates never move
    before = v.detach().clone()
    opt.step()
    with torch.no_grad():
        v.copy_(torch.where(active[:, None], v, before))


def l1_shell_sample(center, lo, hi, n: int, generator: torch.Generator, mask=None) -> torch.Tensor:
    """n points per row in the L1 shell lo <= ||u||_1 < hi around each centre (Growing
    Spheres, Laugel et al. 2017; CCHVAE's latent search): x = c + r u / ||u||_1 with
    u ~ N(0, I) and r ~ U[lo, hi), as CARLA's hyper_sphere_coordindates with p_norm = 1.
    mask (k,) bool limits the move to some coordinates. center (M, k) -> (M, n, k).
    """
    M, k = center.shape
    u = torch.randn(M, n, k, generator=generator, device=center.device)           # (M, n, k)
    if mask is not None:
        u = u * torch.as_tensor(mask, dtype=u.dtype, device=u.device)
    norm = u.abs().sum(dim=2, keepdim=True).clamp_min(1e-12)                       # (M, n, 1)
    r = lo + (hi - lo) * torch.rand(M, n, 1, generator=generator, device=center.device)
    return center[:, None, :] + r * u / norm


# The methods that ask h only for P(y = 1 | x) (common.probability_of_1), so that any fitted
# binary classifier serves as their h; tests/test_hostile_api.py fits each with a scikit-learn one.
ANY_CLASSIFIER = "GenRe, NNR, GrowingSpheres, CCHVAE, DiffusionQ or DiffusionSVDD"


def search_roles(method, X, y, h, immutable, categorical, groups, constraints, domain=None) -> FeatureRoles:
    """fit()'s checks and the FeatureRoles of a baseline: h kept, the roles, and in the designed
    mode a lender's constraints and the data's domain (the paper mode is measured as the paper
    ran it, without either).
    A method that searches through h's logits (method.needs_logits) refuses any other h."""
    check_mode(method.mode)
    X = check_features(X, np.shape(X)[-1], "training X")
    D = X.shape[1]
    check_labels(y, len(X))
    check_classifier(h, X[:5])
    if method.needs_logits and not isinstance(h, torch.nn.Module):
        raise ValueError(f"{type(method).__name__} needs a differentiable h, a torch.nn.Module whose forward gives "
                         f"logits; {type(h).__name__} is not one: with any fitted classifier use {ANY_CLASSIFIER}")
    method.h_ = h
    rules = lender_rules(as_mask(immutable, D, "immutable"), constraints if method.mode == "designed" else None)
    return FeatureRoles(as_mask(immutable, D, "immutable"), as_mask(categorical, D, "categorical"),
                        check_groups(groups, D), rules if rules.beyond_fixed() or rules.fixed.any() else None,
                        as_domain(domain, D) if method.mode == "designed" else None)


def by_rule_set(method, X: torch.Tensor, constraints, search) -> torch.Tensor:
    """search(X) with the method's roles, and in the designed mode a person's constraints for
    this call too: one set, or one per row (rows sharing a set are searched together). Under
    constraints every row returned keeps them, a row the search failed too (the point nearest
    what the search returned that keeps them)."""
    rules = as_constraints(constraints, len(X), X.shape[1]) if method.mode == "designed" else None
    fitted, out = method.roles_, X.clone()
    per_row = rules is not None and rules.fixed.ndim == 2
    keys = [tuple(np.concatenate([getattr(rules.rows(i), f) for f in ("fixed", "increase", "decrease", "lo", "hi")]))
            for i in range(len(X))] if per_row else [()] * len(X)
    try:
        for key in dict.fromkeys(keys):
            rows = [i for i, k in enumerate(keys) if k == key]
            if rules is not None:
                method.roles_ = fitted.with_constraints(rules.rows(rows[0]) if per_row else rules)
            found = search(X[rows])
            if method.roles_.constraints is not None:
                found = method.roles_.project(found, X[rows], clamp=False)
            if method.roles_.domain is not None:                              # a profile a person can have
                found = method.roles_.in_domain(found, X[rows])
            out[rows] = found
    finally:
        method.roles_ = fitted
    return out


class _Search(BaseEstimator, RecourseMethod):
    """What every search baseline shares: the sklearn-style fit that keeps h and the roles,
    and the bookkeeping of recourse()."""

    needs_logits = True       # the search runs through h(x), a torch module's logits

    def fit(self, X, y, h, immutable=None, categorical=None, groups=None, constraints=None, domain=None):
        """Nothing to learn for most methods: keep h and the feature roles. constraints
        (constraints.Constraints, a lender's rules) and the domain (constraints.Domain: every
        recourse rounded to it, a row h rejects once rounded counted failed) are kept in the
        designed mode; the paper's runner had neither, and its mode is measured as it is."""
        self.roles_ = search_roles(self, X, y, h, immutable, categorical, groups, constraints, domain)
        self.immutable_ = self.roles_.immutable
        self._fit_more(check_features(X, np.shape(X)[-1], "training X"), np.asarray(y))
        return self

    def _fit_more(self, X, y) -> None:
        """Hook for methods that learn something from the training data (TAP, DiCE)."""

    def recourse(self, X, constraints=None) -> np.ndarray:
        """One recourse per row of X (M, D); constraints: a person's own limits for this call
        (one set, or a list of one per row), kept in the designed mode."""
        check_fitted(self, "h_")
        X = torch.as_tensor(check_features(X, len(self.immutable_)))   # (M, D)
        X_plus = by_rule_set(self, X, constraints, self._search)
        with torch.no_grad():
            self.n_failed_ = int((~self._succeeded(X, X_plus)).sum())
        return X_plus.numpy().astype(np.float32)

    def _succeeded(self, X, X_plus) -> torch.Tensor:
        """The method's own success test on each returned recourse, (M,) bool; most methods
        test only h(x+) > 0.5."""
        return accepts(self.h_, X_plus)


# ----------------------------------------------------------------------------- Wachter (Eq. 2)

class Wachter(_Search):
    """Wachter et al. (2017), Eq. 2: gradient search from x for a cheap x+ that h calls positive.

        x+ = argmin  BCE(h(x+), 1) + lam * ||x+ - x||_1  =  -log h(x+) + lam * C(x, x+)

    (the paper's form C(x, x+) - gamma log h(x+) with gamma = 1 / lam). As in
    CARLA's implementation, which the paper ran with loss_type="BCE" and
    binary_cat_features=True: Adam (amsgrad) with lr 0.01, lam 0.01, and each row's
    search stops as soon as h(x+) > 0.5; a row still negative after n_iter steps gets
    another round with lam lowered by lam_step. CARLA: rounds repeat until a 30 s
    wall-clock timer ends; here a fixed number of rounds (deterministic).

    designed: mutable features clamped to [0, 1]; binary categoricals searched as
    continuous values and projected at the end; lam floored at 0 (a negative lam would
    reward moving away from x).
    paper (the fork's wachter.py, checked): the clamp acts on a copy
    (`x_new.clone().clamp_(0, 1)`), so nothing is clamped and a recourse may leave the
    data's range (on compas most do, and LOF calls them outliers); h sees x_new with its
    categoricals rounded (reconstruct_encoding_constraints inside the loss), so they get
    no gradient and never move; lam is not floored.

    Immutable features are held fixed during the search (their gradient is masked, their
    value copied from x whatever it is). The stopping test uses the projected point, so
    "h(x+) > 0.5" means what the user receives; rows where no round reached it are
    counted in `n_failed_`.
    """

    def __init__(self, mode: str = "designed", random_state: int = 0, lam: float = 0.01,
                 lr: float = 0.01, n_iter: int = 1000, n_rounds: int = 3, lam_step: float = 0.05):
        self.mode = mode
        self.random_state = random_state
        self.lam = lam                        # CARLA's Wachter
        self.lr = lr                          # CARLA's Wachter
        self.n_iter = n_iter                  # CARLA's Wachter: steps per round
        self.n_rounds = n_rounds              # CARLA: rounds until a timer; a cap here
        self.lam_step = lam_step              # CARLA: lam -= 0.05 per failed round

    def _search(self, X: torch.Tensor) -> torch.Tensor:
        def loss_fn(v, x, lam):                                   # Eq. 2, per row (M,)
            return bce_to_one(self.h_(x)) + lam * (x - X).abs().sum(dim=1)

        paper = self.mode == "paper"
        lams = [self.lam - r * self.lam_step for r in range(self.n_rounds)]
        mutable = ~self.roles_.immutable
        if paper:                                                 # the fork: categoricals never move
            mutable = mutable & ~self.roles_.categorical
        else:
            lams = [max(lam, 0.0) for lam in lams]
        x_plus, _, _ = gradient_search(X, loss_fn, self.roles_, X, h=self.h_, lams=lams, mutable=mutable,
                                       optimizer="amsgrad", lr=self.lr, n_iter=self.n_iter,
                                       clamp=not paper)
        return x_plus


# ----------------------------------------------------------------------------- Growing Spheres

class GrowingSpheres(_Search):
    """Growing Spheres (Laugel et al. 2017): sample L1 shells of growing radius around x and
    return the cheapest candidate that h calls positive.

    Shell s holds n points x + r u / ||u||_1, r ~ U[s step, (s + 1) step) (l1_shell_sample);
    the first shell with a positive candidate gives the one of least L1 cost.
    designed: every mutable feature is sampled, candidates are clamped to [0, 1] and
    projected before h judges them, and Laugel's feature-selection pass follows (reset the
    smallest change to x while h stays positive).
    paper (the fork's gs_counterfactuals.py, checked): only mutable continuous features are
    sampled; each mutable binary is redrawn ~ Bernoulli(1/2) whatever x holds (here a
    one-hot group draws a uniform category), nothing is clamped, no selection pass.
    Both: n = 2000, step 0.01, p_norm = 1 (the fork). Fork: no cap on shells; here max_shells.
    It asks h only whether it accepts each candidate (accepts), as Laugel et al. design it, so
    any fitted classifier serves as h.
    """

    needs_logits = False

    def __init__(self, mode: str = "designed", random_state: int = 0, n_samples: int = 2000,
                 step: float = 0.01, max_shells: int = 1000):
        self.mode = mode
        self.random_state = random_state
        self.n_samples = n_samples            # the fork: 2000 candidates per shell
        self.step = step                      # the fork: shell width 0.01
        self.max_shells = max_shells          # the fork: no cap; here 1000 shells (radius 10)

    def _search(self, X: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.random_state)
        best = X.clone()                                                   # (M, D) failures keep x
        todo = torch.ones(len(X), dtype=torch.bool)
        for s in range(self.max_shells):
            rows = torch.nonzero(todo).flatten()
            if len(rows) == 0:
                break
            cand = self._shell(X[rows], s * self.step, (s + 1) * self.step, gen)   # (A, n, D)
            hit, pick = self._cheapest_positive(X[rows], cand)                     # (A,), (A, D)
            best[rows[hit]] = pick[hit]
            todo[rows[hit]] = False
        if self.mode == "designed":
            best = self._select_features(X, best, ~todo)
        return best

    def _shell(self, X, lo, hi, gen) -> torch.Tensor:
        """Candidates of one shell, immutables held and categoricals projected: (A, D) -> (A, n, D)."""
        roles, (A, D) = self.roles_, X.shape
        moves = ~roles.immutable
        if self.mode == "paper":
            moves = moves & ~roles.categorical
        cand = l1_shell_sample(X, lo, hi, self.n_samples, gen, mask=moves)
        if self.mode == "paper":
            cand = self._redraw_categoricals(cand, gen)
        flat = cand.reshape(-1, D)
        flat = roles.project(flat, X.repeat_interleave(self.n_samples, 0), self.mode == "designed")
        return flat.reshape(A, self.n_samples, D)

    def _redraw_categoricals(self, cand, gen) -> torch.Tensor:
        """The fork: each mutable binary ~ Bernoulli(1/2), independent of x; a group: a uniform category."""
        roles = self.roles_
        in_group = np.zeros_like(roles.categorical)
        for g in roles.groups:
            in_group[g] = True
            if not roles.immutable[g].any():
                pick = torch.randint(len(g), cand.shape[:2], generator=gen)          # (A, n)
                cand[:, :, g] = torch.nn.functional.one_hot(pick, len(g)).to(cand.dtype)
        binary = np.flatnonzero(roles.categorical & ~roles.immutable & ~in_group)
        cand[:, :, binary] = torch.bernoulli(torch.full(cand[:, :, binary].shape, 0.5), generator=gen)
        return cand

    def _cheapest_positive(self, X, cand):
        """Per row: whether any candidate has h > 0.5, and the positive one of least L1 cost."""
        positive = accepts(self.h_, cand)                                      # (A, n)
        cost = (cand - X[:, None, :]).abs().sum(dim=2).masked_fill(~positive, float("inf"))
        i = cost.argmin(dim=1)                                                 # (A,)
        return positive.any(dim=1), cand[torch.arange(len(X)), i]

    def _select_features(self, X, X_plus, found) -> torch.Tensor:
        """Laugel et al.'s sparsification: reset the smallest remaining change to x while h > 0.5.
        One-hot group columns are left alone (resetting one entry would break the group)."""
        free = torch.as_tensor(~self.roles_.immutable)
        for g in self.roles_.groups:
            free[g] = False
        X_plus, going = X_plus.clone(), found.clone()                          # (M, D), (M,)
        for _ in range(X.shape[1]):
            delta = (X_plus - X).abs().masked_fill(~free, float("inf"))
            delta = delta.masked_fill(delta == 0, float("inf"))
            j = delta.argmin(dim=1)                                            # (M,)
            going &= torch.isfinite(delta.min(dim=1).values)
            trial = X_plus.clone()
            rows = torch.arange(len(X))
            trial[rows, j] = X[rows, j]
            keep = going & accepts(self.h_, trial)
            X_plus = torch.where(keep[:, None], trial, X_plus)
            going &= keep
            if not going.any():
                break
        return X_plus


# ----------------------------------------------------------------------------- DiCE

def dpp_diversity(C: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """DiCE's diversity (Mothilal et al. 2020, Eq. 2): det(K), K_ij = 1 / (1 + dist(c_i, c_j)),
    dist = weighted L1, with 1e-4 on the diagonal (dice_ml). C (M, k, D) -> (M,)."""
    dist = ((C[:, :, None, :] - C[:, None, :, :]).abs() * weights).sum(dim=3)   # (M, k, k)
    K = 1.0 / (1.0 + dist) + 1e-4 * torch.eye(C.shape[1])
    return torch.linalg.det(K)


def dice_fork_loss(C: torch.Tensor, x: torch.Tensor, lam: float) -> torch.Tensor:
    """The fork's DICEDiv loss for two candidates C (M, 2, D) -> (M,):

        mean_i BCE(h(c_i), 1) + lam / 2 ||c0 - c1||_1 + 1 - 1 / (1 + ||c0 - c1||_1)

    without the classification term (added by the caller). In the fork the name x is
    rebound to the second candidate before it is used as "the original instance", so the
    proximity term measures ||c0 - c1|| and x itself never enters: `x` is unused here."""
    d01 = (C[:, 0] - C[:, 1]).abs().sum(dim=1)                                  # (M,)
    return lam * d01 / 2 + 1.0 - 1.0 / (1.0 + d01)


class DiCE(_Search):
    """DiCE (Mothilal et al. 2020): k diverse counterfactuals found together by gradient
    descent; the closest valid one is returned.

    designed (dice_ml's gradient method): k = 4 candidates starting at x + 0.01 i, loss

        mean_i hinge(1 - logit(c_i)) + 0.5 * mean_i sum_j |c_ij - x_j| / (D MAD_j) - det(K)

    (Eq. 1 of the paper: validity, proximity weighted by inverse median absolute deviation,
    DPP diversity), Adam lr 0.05, candidates clamped to [0, 1]; a row stops once all k are
    valid; the cheapest valid candidate is returned. Here: no 500-step minimum (dice_ml's
    min_iter), so rows stop at their first all-valid step.
    paper (the fork's DICEDiv, checked): two candidates at x and x + 0.01; loss
    dice_fork_loss, which has no pull towards x; RMSprop (the fork's Adam branch compares
    the optimiser object with 'adam' and never runs) lr 1e-3; up to 1000 steps per round,
    lam = 5 lowered by 0.25 per failed round; it stops at the first step where both are
    valid and returns one of the two at random. No clamp.
    """

    def __init__(self, mode: str = "designed", random_state: int = 0, n_cfs: int = 4,
                 lr: float = 0.05, proximity_weight: float = 0.5, diversity_weight: float = 1.0,
                 n_iter: int = 1000, lam: float = 5.0, lam_step: float = 0.25,
                 fork_lr: float = 1e-3, n_rounds: int = 4):
        self.mode = mode
        self.random_state = random_state
        self.n_cfs = n_cfs                    # dice_ml total_CFs (the fork: 2)
        self.lr = lr                          # dice_ml learning_rate
        self.proximity_weight = proximity_weight
        self.diversity_weight = diversity_weight
        self.n_iter = n_iter                  # fork: max_iter per round; designed: the only round
        self.lam = lam                        # fork lambda_param
        self.lam_step = lam_step              # fork: step
        self.fork_lr = fork_lr                # runner setting
        self.n_rounds = n_rounds              # fork: rounds until a 30 s timer; here a cap

    def _fit_more(self, X, y) -> None:
        """Inverse MAD weights (dice_ml); a feature with MAD 0 gets weight 1."""
        mad = np.median(np.abs(X - np.median(X, axis=0)), axis=0)
        self.weights_ = torch.as_tensor(np.where(mad > 0, 1.0 / np.maximum(mad, 1e-12), 1.0),
                                        dtype=torch.float32)

    def _search(self, X: torch.Tensor) -> torch.Tensor:
        k = self.n_cfs if self.mode == "designed" else 2
        M, D = X.shape
        X_rep = X.repeat_interleave(k, 0)                                     # (M k, D)
        start = X_rep + 0.01 * torch.arange(k, dtype=X.dtype).repeat(M)[:, None]
        h = self.h_

        def loss_fn(v, x, lam):                                               # (M k,)
            C = x.reshape(M, k, D)
            if self.mode == "paper":
                group = bce_to_one(h(C)).mean(dim=1) + dice_fork_loss(C, X, lam)
            else:
                hinge = torch.relu(1.0 - h(C)).mean(dim=1)                    # yloss, hinge on the logit
                prox = ((C - X[:, None]).abs() * self.weights_).sum(dim=2).mean(dim=1) / D
                diversity = dpp_diversity(C, self.weights_)
                group = hinge + self.proximity_weight * prox - self.diversity_weight * diversity
            return (group / k).repeat_interleave(k)

        def all_valid(x_hat, loss):                                           # every candidate of the row
            return (h(x_hat).reshape(M, k) > 0.0).all(dim=1).repeat_interleave(k)

        if self.mode == "paper":
            lams = [self.lam - r * self.lam_step for r in range(self.n_rounds)]
            opt, lr, clamp = "rmsprop", self.fork_lr, False
        else:
            lams, opt, lr, clamp = [0.0], "adam", self.lr, True
        C, found, _ = gradient_search(start, loss_fn, self.roles_, X_rep, lams=lams, optimizer=opt,
                                      lr=lr, n_iter=self.n_iter, clamp=clamp, success=all_valid)
        self.all_valid_ = found.reshape(M, k)[:, 0]                           # (M,) the search's own test
        return self._choose(X, C.reshape(M, k, D))

    def _succeeded(self, X, X_plus) -> torch.Tensor:
        """DiCE's own test: every candidate of the row was valid when its search stopped."""
        return self.all_valid_

    def _choose(self, X, C) -> torch.Tensor:
        """designed: the valid candidate of least L1 cost (if none, the one of largest h);
        paper: one of the two at random, as the fork's coin flip."""
        M = len(X)
        if self.mode == "paper":
            gen = torch.Generator().manual_seed(self.random_state)
            return C[torch.arange(M), torch.randint(2, (M,), generator=gen)]
        with torch.no_grad():
            logit = self.h_(C)                                                # (M, k)
        cost = (C - X[:, None]).abs().sum(dim=2).masked_fill(logit <= 0, float("inf"))
        i = torch.where(torch.isfinite(cost).any(dim=1), cost.argmin(dim=1), logit.argmax(dim=1))
        return C[torch.arange(M), i]


# ----------------------------------------------------------------------------- ROAR

def roar_worst_logit(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, delta: float) -> torch.Tensor:
    """ROAR's inner maximisation in closed form (Upadhyay et al. 2021, Eq. 4):

        max_{||(dW, db)||_inf <= delta} BCE(sigmoid((W + dW)^T x + b + db), 1)

    BCE to 1 falls as the logit grows, so the worst shift lowers the logit as far as the box
    allows: dW = -delta sign(x), db = -delta, giving W^T x + b - delta (||x||_1 + 1).
    (The fork solves the same max with a linear program per step.) x, W (M, D), b (M,) -> (M,)."""
    return (W * x).sum(dim=1) + b - delta * (x.abs().sum(dim=1) + 1.0)


def lime_surrogate(h, X, scale, n: int, gen, target: str, chunk: int = 50):
    """LIME's local linear surrogate of h around each row (ROAR's W, b), as the fork used it:
    n samples z = x + N(0, 1) * scale, kernel sqrt(exp(-d^2 / w^2)) with d the Euclidean
    distance in scale units and w = 0.75 sqrt(D), ridge (alpha 1) on the standardised
    inputs (z - x) / scale. target "prob" regresses h's probability (LIME), "logit" its logit.
    Returns W (M, D) per unit of scale and b (M,): the surrogate's value at x."""
    M, D = X.shape
    width = 0.75 * D ** 0.5
    Ws, bs = [], []
    for start in range(0, M, chunk):
        x = X[start:start + chunk]                                            # (C, D)
        eps = torch.randn(len(x), n, D, generator=gen)                         # (C, n, D)
        with torch.no_grad():
            f = h(x[:, None, :] + eps * scale)                                # (C, n) logits
        f = torch.sigmoid(f) if target == "prob" else f
        kernel = torch.sqrt(torch.exp(-(eps ** 2).sum(dim=2) / width ** 2))   # (C, n)
        W, b = weighted_ridge(eps, f, kernel, alpha=1.0)
        Ws.append(W), bs.append(b)
    return torch.cat(Ws), torch.cat(bs)


def weighted_ridge(A, y, w, alpha: float):
    """Per-row ridge with intercept (sklearn Ridge with sample_weight): A (C, n, D), y, w (C, n)
    -> coefficients (C, D), intercept (C,). The intercept is not penalised."""
    w = w / w.sum(dim=1, keepdim=True)
    a_mean = (w[:, :, None] * A).sum(dim=1)                                   # (C, D)
    y_mean = (w * y).sum(dim=1)                                               # (C,)
    Ac, yc = A - a_mean[:, None], y - y_mean[:, None]
    gram = Ac.transpose(1, 2) @ (w[:, :, None] * Ac)                          # (C, D, D)
    rhs = Ac.transpose(1, 2) @ (w * yc)[:, :, None]                           # (C, D, 1)
    eye = torch.eye(A.shape[2]) * alpha / A.shape[1]        # alpha relative to the weight sum n
    coef = torch.linalg.solve(gram + eye, rhs)[:, :, 0]
    return coef, y_mean - (coef * a_mean).sum(dim=1)


class ROAR(_Search):
    """ROAR (Upadhyay et al. 2021): recourse that stays valid when the model's local linear
    surrogate (W, b) shifts by at most delta in every weight,

        x+ = argmin_x+  max_{||dW, db||_inf <= delta} BCE(sigmoid((W+dW)^T x+ + b + db), 1)
                        + lam ||x+ - x||_1,

    the max in closed form (roar_worst_logit), Adam from x. (W, b) come from LIME
    (lime_surrogate, 5000 samples). delta 0.01 (Table 8), lam 0.001, lr 1e-3 (the fork).
    designed: the surrogate is fitted to h's logit and mapped to raw units (W / scale), so
    sigmoid(W^T x + b) approximates h near x; mutables clamped to [0, 1]; a row stops when
    both the worst-case surrogate logit and h(x+) are positive.
    paper (the fork's roar_recourse.py, checked): the surrogate regresses P(y = 1) on
    standardised inputs but its W, b are used as logit weights on raw x+ (mixed units); no
    clamp; a row stops when its loss changes by < 1e-4 between steps (here tested on the
    iterate before the step, one step earlier than the fork). Fork: no step cap; here n_iter
    (no row reaches it on the benchmarks). Its success test is h(x+) > 0.5 (the fork turns
    other rows into NaN). The fork also moves the immutables and returns the search point
    unprojected (categoricals not rounded); both modes here hold and project, and x_raw_
    keeps the unprojected point of the last recourse() (gaps.py measures the difference).
    """

    def __init__(self, mode: str = "designed", random_state: int = 0, delta: float = 0.01,
                 lam: float = 0.001, lr: float = 1e-3, n_iter: int = 3000,
                 n_lime: int = 5000, tol: float = 1e-4):
        self.mode = mode
        self.random_state = random_state
        self.delta = delta                    # Table 8
        self.lam = lam                        # the runner
        self.lr = lr                          # the fork: Adam's default
        self.n_iter = n_iter                  # the fork: no cap (stops on tol); CPU cap here
        self.n_lime = n_lime                  # LIME samples per row (the fork)
        self.tol = tol                        # the fork: loss change that ends the search

    def _fit_more(self, X, y) -> None:
        """LIME's scaler: the training mean and standard deviation of each feature (std 1 where constant)."""
        std = X.std(axis=0)
        self.mean_ = torch.as_tensor(X.mean(axis=0))
        self.scale_ = torch.as_tensor(np.where(std > 0, std, 1.0), dtype=torch.float32)

    def surrogate(self, X: torch.Tensor):
        """(W (M, D), b (M,)) used as logit weights on raw x+ by the search (see the class doc)."""
        gen = torch.Generator().manual_seed(self.random_state)
        if self.mode == "paper":                       # P(y=1) per std unit, used on raw x+
            W, f_x = lime_surrogate(self.h_, X, self.scale_, self.n_lime, gen, "prob")
            # LIME's intercept is the fit at (z - mean) / std = 0, not at x
            b = f_x - (W * (X - self.mean_) / self.scale_).sum(dim=1)
            return W, b
        W, f_x = lime_surrogate(self.h_, X, self.scale_, self.n_lime, gen, "logit")
        W = W / self.scale_                            # per raw unit
        return W, f_x - (W * X).sum(dim=1)             # logit ~ W^T x+ + b, exact at x+ = x

    def _search(self, X: torch.Tensor) -> torch.Tensor:
        W, b = self.surrogate(X)

        def loss_fn(v, x, lam):
            return bce_to_one(roar_worst_logit(x, W, b, self.delta)) + lam * (x - X).abs().sum(dim=1)

        self.surrogate_ = (W, b)
        success = LossSettled(self.tol) if self.mode == "paper" else \
            (lambda x_hat, loss: self._succeeded(X, x_hat))
        x_plus, _, self.x_raw_ = gradient_search(X, loss_fn, self.roles_, X, lams=[self.lam],
                                                 optimizer="adam", lr=self.lr, n_iter=self.n_iter,
                                                 clamp=self.mode == "designed", success=success)
        return x_plus

    def _succeeded(self, X, X_plus) -> torch.Tensor:
        """designed: the worst-case surrogate logit and h(x+) both positive; paper: h(x+) > 0.5
        (the fork's test after its search)."""
        valid = self.h_(X_plus) > 0
        if self.mode == "paper":
            return valid
        W, b = self.surrogate_
        return (roar_worst_logit(X_plus, W, b, self.delta) > 0) & valid


class LossSettled:
    """A stopping test: true for a row once its loss changed by less than tol since the
    previous step (the fork's ROAR: `while loss_diff > 1e-4`)."""

    def __init__(self, tol: float):
        self.tol, self.prev = tol, None

    def __call__(self, x_hat, loss):
        settled = torch.zeros_like(loss, dtype=torch.bool) if self.prev is None \
            else (loss - self.prev).abs() < self.tol
        self.prev = loss.clone()
        return settled


# ----------------------------------------------------------------------------- PROBE

def invalidation_rate_first_order(h, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """PROBE's closed-form invalidation rate (Pawelczyk et al. 2023, Thm. 1, first order):

        IR(x) = 1 - Phi( l(x) / (sigma ||grad_x l(x)||_2) ),  l = logit of h,

    the chance that x + N(0, sigma^2 I) falls on h's negative side, for h linear near x.
    Differentiable (double backprop): x (M, D) -> (M,)."""
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    logit = h(x)                                                               # (M,)
    grad, = torch.autograd.grad(logit.sum(), x, create_graph=True)            # (M, D), rows independent
    z = logit / (sigma * grad.norm(dim=1).clamp_min(1e-12))
    return 1.0 - torch.distributions.Normal(0.0, 1.0).cdf(z)


@torch.no_grad()
def invalidation_rate_mc(h, x: torch.Tensor, sigma: float, n: int, gen, chunk: int = 20) -> torch.Tensor:
    """Monte Carlo invalidation rate: the fraction of x + N(0, sigma^2 I) that h calls
    negative (logit <= 0), n draws per row. x (M, D) -> (M,)."""
    out = []
    for start in range(0, len(x), chunk):
        xc = x[start:start + chunk]
        noisy = xc[:, None, :] + sigma * torch.randn(len(xc), n, x.shape[1], generator=gen)
        out.append((h(noisy) <= 0.0).float().mean(dim=1))
    return torch.cat(out)


class PROBE(_Search):
    """PROBE (Pawelczyk et al. 2023): a recourse whose invalidation rate under noise
    x+ + N(0, sigma^2 I) is at most r, by gradient descent on (their Eq. 9)

        3 max(IR(x+) - r, 0) + BCE(h(x+), 1) + lam ||x+ - x||_1

    with IR in closed form (invalidation_rate_first_order). Rounds of n_iter Adam (amsgrad)
    steps; after each round a row succeeds when h(x+) > 0.5 and the Monte Carlo rate
    (10^4 draws) is < r + eps; otherwise lam -= 0.1 and another round runs. That test on
    the returned recourse is also what `n_failed_` counts.
    Settings: r = 0.05, sigma^2 = 0.01 (Table 8); n_iter 200, eps 0.01, lam0 0.01, lr 1e-3
    (the paper's runner).
    designed: lam floored at 0, mutables clamped to [0, 1], the test on the projected point.
    paper (the fork's wachter_rip.py, checked):
      - the BCE target is 0.55, not 1: wachter_rip_recourse's default y_target=[0.45, 0.55]
        applies because Wachter_rip.get_counterfactuals never passes its own y_target. The
        BCE term pulls h(x+) back to 0.55, only the hinge on IR pushes past it, and the
        round-end Monte Carlo test (< r + eps) keeps failing for many rows;
      - lam is not floored, so from round 2 it is negative and the cost term pushes x+
        AWAY from x, round after round (rounds_ counts each row's rounds);
      - the clamp acts on a copy (`x_new.clone().clamp_(0, 1)`): nothing is clamped;
      - the test judges x_new itself, categoricals unrounded;
      - on success the fork returns that unrounded x_new, and it moves the immutables;
        here the recourse is projected and holds them (x_raw_ keeps the unprojected point).
    The fork runs rounds until a 30 s timer per row; here n_rounds = 20, about what 30 s allow
    when a 200-step round of the fork's per-row loop takes 1 to 1.5 s, as it does on our
    2-core CPU (gaps.fork_round_seconds times it; a faster machine runs more rounds).
    """

    def __init__(self, mode: str = "designed", random_state: int = 0, target_ir: float = 0.05,
                 eps: float = 0.01, sigma2: float = 0.01, lam: float = 0.01, lam_step: float = 0.1,
                 lr: float = 1e-3, n_iter: int = 200, n_rounds: int = 20, n_mc: int = 10_000,
                 fork_y_target: float = 0.55):
        self.mode = mode
        self.random_state = random_state
        self.target_ir = target_ir            # r, Table 8
        self.eps = eps                        # slack on r in the success test (the runner)
        self.sigma2 = sigma2                  # noise variance, Table 8
        self.lam = lam                        # lam0 (the runner)
        self.lam_step = lam_step              # the fork: lam -= 0.1 per failed round
        self.lr = lr                          # the runner
        self.n_iter = n_iter                  # steps per round (the runner)
        self.n_rounds = n_rounds              # the fork: rounds until a 30 s timer; a cap here
        self.n_mc = n_mc                      # Monte Carlo draws (the fork)
        self.fork_y_target = fork_y_target    # paper mode's BCE target (the fork's default y_target)

    def _search(self, X: torch.Tensor) -> torch.Tensor:
        h, sigma, paper = self.h_, self.sigma2 ** 0.5, self.mode == "paper"
        y_target = self.fork_y_target if paper else 1.0
        gen = torch.Generator().manual_seed(self.random_state)

        def loss_fn(v, x, lam):                                                # Eq. 9, (M,)
            ir = invalidation_rate_first_order(h, x, sigma)
            return 3 * torch.relu(ir - self.target_ir) + bce_to_target(h(x), y_target) \
                + lam * (x - X).abs().sum(dim=1)

        self.rounds_ = torch.zeros(len(X), dtype=torch.long)                   # (M,) rounds each row ran
        done = torch.zeros(len(X), dtype=torch.bool)

        def success(x, loss):                                                  # once per round
            ok = self._passes(x, gen)
            self.rounds_.add_((~done).long())
            done.logical_or_(ok)
            return ok

        lams = [self.lam - r * self.lam_step for r in range(self.n_rounds)]
        if not paper:
            lams = [max(lam, 0.0) for lam in lams]
        x_plus, _, self.x_raw_ = gradient_search(X, loss_fn, self.roles_, X, lams=lams,
                                                 optimizer="amsgrad", lr=self.lr, n_iter=self.n_iter,
                                                 clamp=not paper, success=success, stop="round",
                                                 judge="raw" if paper else "projected")
        return x_plus

    def _passes(self, x, gen) -> torch.Tensor:
        """PROBE's test: h(x) > 0.5 and the Monte Carlo invalidation rate below r + eps, (M,)."""
        ir = invalidation_rate_mc(self.h_, x, self.sigma2 ** 0.5, self.n_mc, gen)
        return (self.h_(x) > 0.0) & (ir < self.target_ir + self.eps)

    def _succeeded(self, X, X_plus) -> torch.Tensor:
        return self._passes(X_plus, torch.Generator().manual_seed(self.random_state + 1))


# ----------------------------------------------------------------------------- TAP

class Verifier(torch.nn.Module):
    """TAP's verifier V(x_a, x_b) = P(x_a and x_b are of different classes): an MLP on the
    concatenated pair, hidden [50, 50, 50, 50] (Table 8), ReLU, one logit out."""

    def __init__(self, n_features: int, hidden=(50, 50, 50, 50)):
        super().__init__()
        sizes = [2 * n_features, *hidden]
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        self.net = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], 1))

    def forward(self, xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([xa, xb], dim=-1)).squeeze(-1)               # (..., 2D) -> (...,)


def pair_batch(X, y, batch: int, gen):
    """Half same-class, half different-class pairs of training rows: (xa, xb, different)."""
    pos, neg = torch.nonzero(y == 1).flatten(), torch.nonzero(y == 0).flatten()
    half = batch // 2
    a = torch.randint(len(X), (batch,), generator=gen)
    same_pool = torch.where(y[a[:half]] == 1, 1, 0)
    pick = lambda pool, n: pool[torch.randint(len(pool), (n,), generator=gen)]
    b_same = torch.where(same_pool == 1, pick(pos, half), pick(neg, half))
    b_diff = torch.where(y[a[half:]] == 1, pick(neg, batch - half), pick(pos, batch - half))
    b = torch.cat([b_same, b_diff])
    return X[a], X[b], (y[a] != y[b]).float()


def tap_d_y(p: torch.Tensor, p_star: float) -> torch.Tensor:
    """TAP's target loss d_Y: KL(Bern(p) || Bern(p*)) while p < p*, else exactly 0. (M,) -> (M,)."""
    p = p.clamp(1e-6, 1 - 1e-6)
    kl = p * torch.log(p / p_star) + (1 - p) * torch.log((1 - p) / (1 - p_star))
    return torch.where(p < p_star, kl, torch.zeros_like(kl))


class TAP(_Search):
    """TAP (Friedbaum et al. 2024): gradient search guided to the target class, checked by a
    learned verifier of "different class" pairs.

    fit: train Verifier on pairs of the training split (cross-entropy on "different class",
    half same-class, half cross-class; Adam lr 1e-4, batch 128, Table 8). Paper: 2000 epochs
    (~570k steps on adult); here a cap of n_steps so it fits in about a minute on a CPU.
    recourse: n_iter = 1000 Adam steps (lr 0.01, Table 8) on

        d_Y(h(x+)) + lam ||x+ - x||_1 + 100 sum_j (relu(x+_j - 1) + relu(-x+_j)),

    p* = 1 - 0.9 (1 - p_t) (the TAP code's initial margin 0.9), lam 1, gamma 0.5 (the TAP
    code's defaults), immutables' gradients zeroed. A row with no success runs again with lam
    halved, up to n_rounds = 6 times (the TAP code's create_tolerance_optimal_AP halves its
    balance parameter while the target is missed, max_steps = 6): with lam = 1 and an L1
    cost the d_Y gradient of a typical h is too weak to move x at all. A row succeeds when
    h(x+) > 0.5 and V(x, x+) >= gamma; `n_failed_` counts the returned recourses that miss it.
    designed: p_t 0.5 (h's own threshold: the TAP code leaves p to its user); every step is
    tested and the successful iterate of least L1 cost is kept, else the last.
    paper: TAP has no fork implementation and the code the paper ran for its TAP row is not
    public, so this mode runs TAP as its authors' public code does (amicable_pertubations.py):
    p_t 0.9 (their adult example, AP_generator_Continuous(..., p=0.9)), and each try runs all
    its steps and offers its LAST iterate (suggest_AP), which the verifier accepts or sends
    back for another try. The last iterate sits where d_Y reaches 0, at h(x+) >= p*, well
    past h's boundary, where the cheapest valid iterate sits just past it.
    """

    def __init__(self, mode: str = "designed", random_state: int = 0, lam: float = 1.0,
                 p_t: float = 0.5, gamma: float = 0.5, lr: float = 0.01, n_iter: int = 1000,
                 n_rounds: int = 6, paper_p_t: float = 0.9,
                 verifier_lr: float = 1e-4, batch_size: int = 128, n_steps: int = 20_000,
                 cache_dir=None, verbose: bool = False):
        self.mode = mode
        self.random_state = random_state
        self.lam = lam                        # the TAP code's initial balance parameter
        self.p_t = p_t                        # target P(y = 1) (designed: h's threshold)
        self.paper_p_t = paper_p_t            # paper mode's target (the TAP code's adult example)
        self.gamma = gamma                    # the TAP code: verifier confidence
        self.lr = lr                          # Table 8
        self.n_iter = n_iter                  # Table 8
        self.n_rounds = n_rounds              # the TAP code's max_steps
        self.verifier_lr = verifier_lr        # Table 8
        self.batch_size = batch_size          # Table 8
        self.n_steps = n_steps                # Table 8: 2000 epochs; CPU default: a step cap
        self.cache_dir = cache_dir            # where the trained verifier is kept, or None
        self.verbose = verbose

    def _fit_more(self, X, y) -> None:
        if not ((y == 0).any() and (y == 1).any()):
            raise ValueError("TAP needs both classes in y to train its verifier")
        self.verifier_ = Verifier(X.shape[1])
        path = self._cache_path(X, y)
        if path and os.path.exists(path):
            self.verifier_.load_state_dict(torch.load(path))
        else:
            self._train_verifier(torch.as_tensor(X), torch.as_tensor(y, dtype=torch.long))
            if path:
                write_cache(path, lambda f: torch.save(self.verifier_.state_dict(), f))
        self.verifier_.eval()

    def _cache_path(self, X, y):
        """cache_dir/tap_verifier_<hash of X, y, seed and the verifier settings>.pt, or None."""
        if self.cache_dir is None:
            return None
        digest = hashlib.sha1(np.ascontiguousarray(X).tobytes())
        digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
        digest.update(repr((self.random_state, self.verifier_lr, self.batch_size, self.n_steps)).encode())
        return os.path.join(self.cache_dir, f"tap_verifier_{digest.hexdigest()[:12]}.pt")

    def _train_verifier(self, X, y) -> None:
        gen = torch.Generator().manual_seed(self.random_state)
        with torch.random.fork_rng():                                         # seeded, global RNG untouched
            torch.manual_seed(self.random_state)
            self.verifier_ = Verifier(X.shape[1])                             # its initial weights
        opt = torch.optim.Adam(self.verifier_.parameters(), lr=self.verifier_lr)
        start = time.time()
        for step in range(1, self.n_steps + 1):
            xa, xb, different = pair_batch(X, y, self.batch_size, gen)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(self.verifier_(xa, xb), different)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if self.verbose and (step % 2000 == 0 or step == self.n_steps):
                print(f"    TAP verifier step {step}/{self.n_steps}  loss {loss.item():.4f}  "
                      f"{time.time() - start:.1f}s", flush=True)

    def _search(self, X: torch.Tensor) -> torch.Tensor:
        h, V, paper = self.h_, self.verifier_, self.mode == "paper"
        p_star = 1 - 0.9 * (1 - (self.paper_p_t if paper else self.p_t))

        def loss_fn(v, x, lam):
            box = (torch.relu(x - 1) + torch.relu(-x)).sum(dim=1)
            return tap_d_y(torch.sigmoid(h(x)), p_star) + lam * (x - X).abs().sum(dim=1) + 100 * box

        def cost(x_hat):
            return (x_hat - X).abs().sum(dim=1)

        for p in V.parameters():
            p.requires_grad_(False)                                           # the verifier is fixed here
        lams = [self.lam * 0.5 ** r for r in range(self.n_rounds)]
        keep = dict(stop="round") if paper else dict(stop="never", keep_best=True, rank=cost)
        x_plus, _, _ = gradient_search(X, loss_fn, self.roles_, X, optimizer="adam", lr=self.lr,
                                       lams=lams, n_iter=self.n_iter,
                                       success=lambda x_hat, loss: self._succeeded(X, x_hat), **keep)
        return x_plus

    def _succeeded(self, X, X_plus) -> torch.Tensor:
        """TAP's test: h(x+) > 0.5 and the verifier's P(x, x+ of different classes) >= gamma."""
        return (self.h_(X_plus) > 0.0) & (torch.sigmoid(self.verifier_(X, X_plus)) >= self.gamma)


# ----------------------------------------------------------------------------- registry

SEARCH_METHODS = {"wachter": Wachter, "gs": GrowingSpheres, "dice": DiCE,
                  "roar": ROAR, "probe": PROBE, "tap": TAP}
