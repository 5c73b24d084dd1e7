"""Baseline recourse methods: nearest-neighbour recourse (Sec. 5.5) and Wachter (Eq. 2).

Every method here, and GenRe in genre.py, follows one small scikit-learn style
interface, so evaluate.py treats them alike:

    method = Method(**hyperparameters)          # stores arguments only
    method.fit(X, y, h, immutable=mask, categorical=mask)   # returns self
    X_plus = method.recourse(X_neg)             # (M, D): one recourse per row

X is min-max scaled (N, D) float32, y the labels in {0, 1}, h the classifier
(a torch module giving logits, with `predict_proba`), and the masks (D,) bool.
"""
from __future__ import annotations

import numpy as np
import torch
from common import as_mask, check_features, check_fitted, l1_cost, project_categoricals
from genre import training_sets


def nearest(X_src: np.ndarray, X_dst: np.ndarray, immutable: np.ndarray, chunk: int = 2048):
    """Index of the nearest row of X_dst (L1, immutables matching) for each row of X_src.

    Returns (indices (S,), costs (S,)); the cost is inf where no row of X_dst keeps
    the immutables of the source.
    """
    src, dst = torch.as_tensor(X_src), torch.as_tensor(X_dst)
    imm = torch.as_tensor(immutable)
    idx, costs = [], []
    for start in range(0, len(src), chunk):                  # chunks bound the (S, T) matrix
        cost, i = l1_cost(src[start:start + chunk], dst, imm).min(dim=1)
        idx.append(i)
        costs.append(cost)
    return torch.cat(idx).numpy(), torch.cat(costs).numpy()


class NNR:
    """Nearest-neighbour recourse (Sec. 5.5): return the closest training instance in a pool.

    pool="label":  training rows with y = 1                    (NNR)
    pool="h":      training rows with h(x) > gamma             (NNR, gamma > 0.7)
    pool="dhplus": rows with y = 1 and h(x) > gamma = D_h^+    (NNR (D_h^+))

    L1 distance; a candidate must match every immutable feature of x. The pool
    holds real data points, so categoricals are valid by construction. If no
    pool row matches x's immutables, x itself is returned (an invalid recourse,
    counted in `n_failed_`).
    """

    def __init__(self, pool: str = "dhplus", gamma: float = 0.7):
        self.pool = pool
        self.gamma = gamma

    def fit(self, X, y, h, immutable=None, categorical=None, groups=None) -> "NNR":
        if self.pool not in ("label", "h", "dhplus"):
            raise ValueError(f"unknown pool {self.pool!r}; use 'label', 'h' or 'dhplus'")
        X = check_features(X, np.shape(X)[-1], "training X")
        y, p = np.asarray(y), h.predict_proba(X)                 # p = h(x), (N,)
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
        return self

    def recourse(self, X) -> np.ndarray:
        check_fitted(self, "pool_")
        X = check_features(X, self.pool_.shape[1])
        idx, cost = nearest(X, self.pool_, self.immutable_)
        found = np.isfinite(cost)
        self.n_failed_ = int((~found).sum())
        return np.where(found[:, None], self.pool_[idx], X)


def bce_to_one(logits: torch.Tensor) -> torch.Tensor:
    """BCE(h(x), 1) = -log sigmoid(logit) = softplus(-logit), computed stably, (M,)."""
    return torch.nn.functional.softplus(-logits)


class Wachter:
    """Wachter et al. (2017), Eq. 2: gradient search from x for a cheap x+ that h calls positive.

        x+ = argmin  BCE(h(x+), 1) + lam * ||x+ - x||_1  =  -log h(x+) + lam * C(x, x+)

    (the paper's form C(x, x+) - gamma log h(x+) with gamma = 1 / lam). As in
    CARLA's implementation, which the paper ran with loss_type="BCE" and
    binary_cat_features=True: Adam (amsgrad) with lr 0.01, lam 0.01, features
    clamped to [0, 1], and each row's search stops as soon as h(x+) > 0.5; a
    row still negative after n_iter steps gets another round with lam lowered
    by lam_step.
    Paper/CARLA: rounds repeat until a 30 s wall-clock timer ends, and lam may
    go negative. Here: a fixed number of rounds (deterministic) and lam floored
    at 0, because a negative lam would reward moving away from x.

    Immutable features are held fixed during the search (their gradient is
    masked), not only reset afterwards. Binary categoricals are searched as
    continuous values and rounded to {0, 1} at the end (one-hot groups: set to
    their largest entry); the stopping test uses the projected point, so
    "h(x+) > 0.5" means what the user receives.
    Rows where no round reached h(x+) > 0.5 are counted in `n_failed_`.
    """

    def __init__(self, lam: float = 0.01, lr: float = 0.01, n_iter: int = 1000,
                 n_rounds: int = 3, lam_step: float = 0.05):
        self.lam = lam
        self.lr = lr
        self.n_iter = n_iter
        self.n_rounds = n_rounds
        self.lam_step = lam_step

    def fit(self, X, y, h, immutable=None, categorical=None, groups=None) -> "Wachter":
        """Nothing to learn: keep h and the feature roles."""
        n_features = check_features(X, np.shape(X)[-1], "training X").shape[1]
        self.h_ = h
        self.immutable_ = as_mask(immutable, n_features, "immutable")
        self.categorical_ = as_mask(categorical, n_features, "categorical")
        self.groups_ = list(groups or [])
        return self

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """Clamp to [0, 1] (the training range) and project categoricals to valid codes."""
        return torch.from_numpy(project_categoricals(x.clamp(0, 1).numpy(), self.categorical_, self.groups_))

    def recourse(self, X) -> np.ndarray:
        check_fitted(self, "h_")
        X = torch.as_tensor(check_features(X, len(self.immutable_)))   # (M, D)
        mutable = torch.as_tensor(~self.immutable_, dtype=X.dtype)       # (D,)
        x_new = X.clone().requires_grad_(True)
        opt = torch.optim.Adam([x_new], lr=self.lr, amsgrad=True)
        active = torch.ones(len(X), dtype=torch.bool)                  # (M,) rows still searching
        for rnd in range(self.n_rounds):
            lam = max(self.lam - rnd * self.lam_step, 0.0)
            for _ in range(self.n_iter):
                with torch.no_grad():                                   # logit <= 0: h <= 0.5
                    active &= self.h_(self._project(x_new)) <= 0.0
                if not active.any():
                    break
                x_cont = x_new.clamp(0, 1)
                loss = (bce_to_one(self.h_(x_cont)) + lam * (x_cont - X).abs().sum(dim=1)).sum()
                grad, = torch.autograd.grad(loss, x_new)                # h's weights get no grad
                x_new.grad = grad * mutable                             # immutables never move
                before = x_new.detach().clone()
                opt.step()
                with torch.no_grad():                                   # finished rows stay put
                    x_new.copy_(torch.where(active[:, None], x_new, before))
        with torch.no_grad():
            X_plus = self._project(x_new)
            self.n_failed_ = int((self.h_(X_plus) <= 0.0).sum())
        return X_plus.numpy()
