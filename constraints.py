"""Actionability constraints: what may change in a recourse, and how.

A recourse is advice to a person, and a lender or the person may rule out some changes.
Per feature j, in scaled units (datasets.Dataset.constraints builds them from original
units and column names):

    fixed      x+_j = x_j                      (the immutables, or a feature a person keeps)
    increase   x+_j >= x_j                     (age, education)
    decrease   x+_j <= x_j
    lo, hi     lo_j <= x+_j <= hi_j            a permitted range; a binary categorical's allowed
                                               values are its 0/1 bounds, and a one-hot member
                                               whose value is not allowed has hi = 0

Each field is (D,), one set for every row, or (M, D), one set per row; `names` holds the D
features' names when a Dataset built them (None when built by hand), and every method checks
them against the constraints they meet at fit or recourse (__and__), evaluate.py against the
data set's (for_features): rules built for another data set of the same width are refused
instead of applied to the wrong features. For a row x they
make one interval [L_j, U_j] per feature (bounds); a recourse keeps the constraints when
every x+_j lies in it. Where an interval is empty (x_j = 20 hours, the range 35-60, and
"decrease only"), no recourse can keep it: the methods keep x_j there and the benchmark
counts the row.

Every method keeps them exactly in its designed mode: GenRe gives the bins outside [L, U]
zero probability before each draw (BinMask) and pairs only targets that keep them (Eq. 6
with C = inf, as for immutables: pair_breaks); NNR filters its candidates; the searches
and the generative baselines project every point (project).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from common import probability_of_1

TOLERANCE = 1e-6     # scaled units: a bound is kept within float32's rounding of the scaled value
RULES = ("fixed", "increase", "decrease", "lo", "hi")    # the fields that hold rules, (D,) or (M, D)


@dataclass
class Constraints:
    fixed: np.ndarray        # (D,) or (M, D) bool
    increase: np.ndarray     # (D,) or (M, D) bool
    decrease: np.ndarray     # (D,) or (M, D) bool
    lo: np.ndarray           # (D,) or (M, D) float64, -inf where there is no lower bound
    hi: np.ndarray           # (D,) or (M, D) float64, +inf where there is no upper bound
    names: tuple | None = None   # (D,) the features' names (Dataset.constraints), None if unknown

    @classmethod
    def free(cls, n_features: int, names=None) -> "Constraints":
        """No constraint on any of n_features features (named `names`, if given)."""
        no = np.zeros(n_features, dtype=bool)
        return cls(no, no.copy(), no.copy(), np.full(n_features, -np.inf), np.full(n_features, np.inf), names)

    @classmethod
    def immutables(cls, immutable) -> "Constraints":
        """The immutable features fixed, nothing else."""
        return replace(cls.free(len(immutable)), fixed=np.asarray(immutable, dtype=bool).copy())

    def __post_init__(self):
        for f in ("fixed", "increase", "decrease"):
            setattr(self, f, np.asarray(getattr(self, f), dtype=bool))
        self.lo, self.hi = np.asarray(self.lo, dtype=np.float64), np.asarray(self.hi, dtype=np.float64)
        shapes = {f: getattr(self, f).shape for f in RULES}
        if len(set(shapes.values())) > 1 or self.fixed.ndim not in (1, 2):
            raise ValueError("Constraints' fields must share one shape, (D,) or (M, D); got "
                             + ", ".join(f"{f} {s}" for f, s in shapes.items()))
        if np.isnan(self.lo).any() or np.isnan(self.hi).any():
            raise ValueError("a constraint's range bound is NaN")
        if (self.lo == np.inf).any() or (self.hi == -np.inf).any():
            raise ValueError("a constraint's range bound is infinite (lo = +inf or hi = -inf): no value could keep it")
        if self.names is not None:
            self.names = tuple(str(name) for name in self.names)
            if len(self.names) != self.n_features:
                raise ValueError(f"Constraints name {len(self.names)} features for rules on {self.n_features}")

    @property
    def n_features(self) -> int:
        return self.fixed.shape[-1]

    def __and__(self, other: "Constraints | None") -> "Constraints":
        """Both sets at once: every rule of each holds."""
        if other is None:
            return self
        if other.n_features != self.n_features:
            raise ValueError(f"constraints for {other.n_features} features given to a model of {self.n_features}")
        if self.names is not None:
            other.for_features(self.names)
        return Constraints(self.fixed | other.fixed, self.increase | other.increase, self.decrease | other.decrease,
                           np.maximum(self.lo, other.lo), np.minimum(self.hi, other.hi), self.names or other.names)

    def for_features(self, names) -> "Constraints":
        """These constraints, checked to be for the features `names` (a data set's feature_names,
        or another set's names), or a one-line ValueError naming the first feature that differs.
        Constraints without names (built by hand) cannot be checked and are taken as they are."""
        names = tuple(str(name) for name in names)
        if self.names is not None and names != self.names:
            j = next((j for j, (a, b) in enumerate(zip(self.names, names)) if a != b), min(len(names), self.n_features))
            mine, theirs = (n[j] if j < len(n) else "nothing" for n in (self.names, names))
            raise ValueError(f"constraints built for another data set: their feature {j} is {mine!r}, "
                             f"where the data has {theirs!r}; build them with this data set's Dataset.constraints")
        return self

    def beyond_fixed(self) -> bool:
        """A rule other than a fixed feature: a direction or a range."""
        return bool(self.increase.any() | self.decrease.any() | np.isfinite(self.lo).any() | np.isfinite(self.hi).any())

    def bounds(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The interval [L, U] each x+_j must lie in for the rows X (M, D) -> two (M, D) float64:
        L = max(lo, x where fixed or increase), U = min(hi, x where fixed or decrease)."""
        X = np.asarray(X, dtype=np.float64)
        L = np.where(self.fixed | self.increase, np.maximum(self.lo, X), self.lo)
        U = np.where(self.fixed | self.decrease, np.minimum(self.hi, X), self.hi)
        return np.broadcast_to(L, X.shape), np.broadcast_to(U, X.shape)

    def broken(self, X: np.ndarray, X_plus: np.ndarray) -> np.ndarray:
        """(M, D) bool: x+_j breaks a rule for x (a fixed feature must be copied exactly)."""
        X, X_plus = np.asarray(X, dtype=np.float64), np.asarray(X_plus, dtype=np.float64)
        L, U = self.bounds(X)
        moved = np.broadcast_to(self.fixed, X.shape) & (X_plus != X)
        return moved | (X_plus < L - TOLERANCE) | (X_plus > U + TOLERANCE)

    def violated(self, X: np.ndarray, X_plus: np.ndarray) -> np.ndarray:
        """(M,) bool: the recourse X_plus of row X breaks at least one rule."""
        return self.broken(X, X_plus).any(axis=1)

    def pair_breaks(self, X_src: torch.Tensor, X_dst: torch.Tensor, rows=slice(None)) -> torch.Tensor | None:
        """Eq. 6's C = inf: (S, T) bool, target x+ breaks a rule for source x, or None if no rule
        but fixed features applies (l1_cost compares those). X_dst (T, D) for every source, or
        (S, T, D) each source's own targets. `rows` picks the sources' rows of per-row constraints."""
        per_row = self.fixed.ndim == 2
        part = lambda a: torch.as_tensor(a[rows] if per_row else a, device=X_src.device)
        lo, hi, inc, dec = part(self.lo), part(self.hi), part(self.increase), part(self.decrease)
        if not (torch.isfinite(lo).any() | torch.isfinite(hi).any() | inc.any() | dec.any()):
            return None
        xs = X_src[:, None, :].double()                                     # (S, 1, D)
        xd = (X_dst[None] if X_dst.ndim == 2 else X_dst).double()           # (1, T, D), or (S, T, D) per source
        out = (xd < lo[..., None, :] - TOLERANCE) | (xd > hi[..., None, :] + TOLERANCE)
        out = out | (inc[..., None, :] & (xd < xs - TOLERANCE)) | (dec[..., None, :] & (xd > xs + TOLERANCE))
        return out.any(dim=-1)                                              # (S, T)

    def project(self, X, X_plus, categorical, groups=()) -> np.ndarray:
        """The nearest point of each recourse that keeps the rules: a continuous feature clipped
        to [L, U]; a binary categorical rounded, or set to its one allowed value; a one-hot
        group set to its allowed member with the largest value. Where nothing is allowed, x's
        own value. X, X_plus (M, D) -> (M, D) float32."""
        X, out = np.asarray(X, dtype=np.float64), np.array(X_plus, dtype=np.float64)
        L, U = self.bounds(X)
        can = lambda v: (L <= v + TOLERANCE) & (U >= v - TOLERANCE)               # (M, D): x+_j = v allowed
        can0, can1 = can(0.0), can(1.0)
        grouped = in_groups(groups, X.shape[1])
        for g in map(list, groups):
            others_zero = can0[:, g].sum(1, keepdims=True) - can0[:, g] == len(g) - 1
            ok = can1[:, g] & others_zero                                         # (M, m): member i may be the 1
            pick = np.where(ok, out[:, g], -np.inf).argmax(axis=1)
            out[:, g] = np.where(ok.any(1, keepdims=True), np.eye(len(g))[pick], X[:, g])
        binary = np.asarray(categorical, dtype=bool) & ~grouped
        r = np.clip(np.round(out), 0, 1)
        allowed = can0 | can1
        out[:, binary] = np.where(allowed, np.where(np.where(r == 1, can1, can0), r, 1 - r), X)[:, binary]
        cont = ~np.asarray(categorical, dtype=bool) & ~grouped
        out[:, cont] = np.where(L <= U + TOLERANCE, np.clip(out, L, U), X)[:, cont]
        return np.where(np.broadcast_to(self.fixed, X.shape), X, out).astype(np.float32)

    def rows(self, idx) -> "Constraints":
        """The constraints of the rows idx (per-row constraints), or self (one set for all)."""
        if self.fixed.ndim == 1:
            return self
        return Constraints(*(getattr(self, f)[idx] for f in RULES), names=self.names)


def in_groups(groups, n_features: int) -> np.ndarray:
    """(D,) bool: the feature is a member of a one-hot group."""
    mask = np.zeros(n_features, dtype=bool)
    for g in groups:
        mask[list(g)] = True
    return mask


def stack(per_row: list["Constraints"]) -> "Constraints":
    """One set per row, from a list of (D,) sets -> (M, D) fields; named sets must name the same features."""
    names = next((c.names for c in per_row if c.names is not None), None)
    for c in per_row:
        if c.names is not None:
            c.for_features(names)
    return Constraints(*(np.stack([getattr(c, f) for c in per_row]) for f in RULES), names=names)


def as_constraints(constraints, n_rows: int | None, n_features: int) -> "Constraints | None":
    """None, one Constraints for every row, or a list of one per row -> Constraints (or None),
    with a one-line error for the wrong number of features or rows."""
    if constraints is None:
        return None
    if isinstance(constraints, (list, tuple)):
        if n_rows is not None and len(constraints) != n_rows:
            raise ValueError(f"constraints: {len(constraints)} sets given for {n_rows} rows (give one, or one per row)")
        constraints = stack(list(constraints))
    if not isinstance(constraints, Constraints):
        raise ValueError(f"constraints must be a constraints.Constraints (or a list of them), got {type(constraints).__name__}")
    if constraints.n_features != n_features:
        raise ValueError(f"constraints for {constraints.n_features} features given to a model of {n_features}")
    if constraints.fixed.ndim == 2 and n_rows is not None and len(constraints.fixed) != n_rows:
        raise ValueError(f"constraints hold {len(constraints.fixed)} rows for {n_rows} rows of X")
    return constraints


@dataclass
class Domain:
    """Where a person's profile may lie: feature j takes only multiples of its resolution r_j in
    original units (whole numbers: r_j = 1; 0: continuous). In scaled units, x_j = (v - min_j)
    / span_j, and min_j is a multiple of r_j (every training value is), so the allowed values
    are (m r_j) / span_j for whole m: computed in float64 as the data's own rows are, a value
    rounded here is bit-identical to a data row holding the same number.
    datasets.Dataset.domain builds one from the data."""
    resolution: np.ndarray   # (D,) float64, original units; 0 = continuous
    span: np.ndarray         # (D,) float64, the train split's max - min, original units

    @property
    def discrete(self) -> np.ndarray:
        """(D,) bool: the features with a resolution."""
        return np.asarray(self.resolution) > 0

    def round(self, X: np.ndarray, L=None, U=None) -> np.ndarray:
        """Each discrete feature of X (M, D), scaled, to the nearest allowed value, inside [L, U]
        ((M, D) or (D,) scaled bounds, Constraints.bounds) where one is: rounded inward. Where
        [L, U] holds no allowed value the nearest one is kept (and a constraint is counted
        broken). Continuous features are returned as they are. -> float32."""
        X = torch.from_numpy(np.array(X, dtype=np.float64))
        out = X.clone()
        column = lambda B, j: None if B is None else torch.from_numpy(np.broadcast_to(B, X.shape)[:, j].copy())
        for j in np.flatnonzero(self.discrete):
            out[:, j] = self.round_column(j, X[:, j], column(L, j), column(U, j))
        return out.numpy().astype(np.float32)

    def round_column(self, j: int, value: torch.Tensor, L=None, U=None) -> torch.Tensor:
        """round() for feature j of a batch: value (B,), L and U (B,) or None; computed in
        float64, returned in value's dtype."""
        if not self.discrete[j]:
            return value
        r, span = float(self.resolution[j]), float(self.span[j])
        m = torch.round(value.double() * span / r)
        if L is not None:
            lo = torch.ceil(L.double() * span / r - TOLERANCE * span / r)
            hi = torch.floor(U.double() * span / r + TOLERANCE * span / r)
            m = torch.where(lo <= hi, torch.minimum(torch.maximum(m, lo), hi), m)
        return (m * r / span).to(value.dtype)

    def off_grid(self, X: np.ndarray) -> np.ndarray:
        """(M,) bool: a row with a discrete feature off its allowed values."""
        X = np.asarray(X, dtype=np.float32)
        return (self.round(X) != X)[:, self.discrete].any(axis=1)


def as_domain(domain, n_features: int) -> "Domain | None":
    """None, or a Domain for n_features features, with a one-line error otherwise."""
    if domain is None:
        return None
    if not isinstance(domain, Domain):
        raise ValueError(f"domain must be a constraints.Domain (Dataset.domain()), got {type(domain).__name__}")
    if len(domain.resolution) != n_features:
        raise ValueError(f"a domain of {len(domain.resolution)} features given to data of {n_features}")
    return domain


def lender_rules(immutable: np.ndarray, constraints) -> Constraints:
    """The rules a fit keeps: the immutables fixed, and a lender's constraints (one set for
    every row) -> Constraints."""
    rules = as_constraints(constraints, None, len(immutable))
    if rules is not None and rules.fixed.ndim != 1:
        raise ValueError("constraints given to fit are a lender's rules, one set for every row; give a "
                         "person's own limits to recourse(X, constraints=...)")
    return Constraints.immutables(immutable) & rules


class BinMask:
    """Algorithm 2 under constraints: before feature j is drawn, the bins whose value would
    break a rule get probability zero. L, U (B, D) are each sequence's bounds
    (Constraints.bounds).

    A continuous bin is allowed when its interval [mu - w/2, mu + w/2] meets [L_j, U_j], and
    the value drawn is then clipped into [L_j, U_j]; a categorical bin when its value (with
    Algorithm 2's noise, rounded) lies in [L_j, U_j]. In a one-hot group, a member may be 1
    only if it is allowed, and 0 only if a later member can still be 1, so the group ends
    one-hot on an allowed value. Where no bin is left (the model never learned a value the
    rules leave), the allowed value nearest x_j is taken; where the rules leave none
    (L_j > U_j), x_j, and the benchmark counts the row.
    """

    def __init__(self, bins, kinds, L: torch.Tensor, U: torch.Tensor):
        self.bins, self.kinds, self.L, self.U = bins, kinds, L, U
        groups = [kind.group_before + [last] for last, kind in enumerate(kinds) if kind.group_last]
        group_of = {j: group for group in groups for j in group}            # j -> its one-hot group
        self.later = {j: g[g.index(j) + 1:] for j, g in group_of.items()}  # j -> the group's members after j
        # Features no rule touches for any row (a continuous one unbounded, a categorical, or
        # every member of its group, free to be 0 or 1): every bin is allowed and nothing is
        # clipped, so restrict() and keep() leave them as they are without computing.
        unbounded = ((L == -float("inf")).all(0) & (U == float("inf")).all(0)).tolist()
        zero_or_one = ((L <= 0).all(0) & (U >= 1).all(0)).tolist()
        self.free = {j for j, kind in enumerate(kinds)
                     if (all(zero_or_one[i] for i in group_of.get(j, [j])) if kind.categorical else unbounded[j])}

    def allows(self, j, value):
        """(B,) or (B, V) bool: feature j may take `value` (a categorical's 0 or 1)."""
        L, U = self.L[:, j], self.U[:, j]
        if value.dim() == 2:
            L, U = L[:, None], U[:, None]
        ok = (value >= L - TOLERANCE) & (value <= U + TOLERANCE)
        later = self.later.get(j)
        if later:                                                           # a group member, not the last:
            can_later = (self.U[:, later] >= 1 - TOLERANCE).any(1)          # 0 only if a later one can be 1
            ok = ok & ((value == 1) | (can_later[:, None] if value.dim() == 2 else can_later))
        return ok

    def restrict(self, j, logits, x_plus, noise):
        """logits (B, V) of feature j with the disallowed bins at -inf, and (B, V) allowed; a row
        with no allowed bin is left as it was (keep() then sets its value). noise (B,) is the
        sigma eps Algorithm 2 adds to the bin's value, known before the draw."""
        if j in self.free:
            return logits, None
        mu, w, kind = self.bins.mu[j], self.bins.w[j], self.kinds[j]
        if kind.categorical:
            ok = self.allows(j, (mu + noise[:, None] >= 0.5).to(self.L.dtype))     # (B, V) as rounded
            if kind.group_before:                                                    # an earlier member is 1:
                ok = ok | (x_plus[:, kind.group_before] > 0.5).any(1, keepdim=True)  # this one will be 0 anyway
        else:
            L, U = self.L[:, j, None], self.U[:, j, None]
            ok = (mu + w / 2 >= L - TOLERANCE) & (mu - w / 2 <= U + TOLERANCE)      # (B, V)
        some = ok.any(1, keepdim=True)
        return logits.masked_fill(~ok & some, float("-inf")), ok

    def keep(self, j, value, x, ok):
        """x+_j (B,) after the draw: a continuous value clipped to [L_j, U_j]; where no bin was
        allowed, the allowed value nearest x_j (x_j itself where none is)."""
        if j in self.free:
            return value
        L, U = self.L[:, j], self.U[:, j]
        if self.kinds[j].categorical:
            one = torch.ones_like(value)
            nearest = torch.where(self.allows(j, x[:, j]), x[:, j],
                                  torch.where(self.allows(j, one), one, torch.where(self.allows(j, 0 * one), 0 * one, x[:, j])))
        else:
            value = torch.minimum(torch.maximum(value, L), U)
            nearest = torch.where(L <= U, torch.minimum(torch.maximum(x[:, j], L), U), x[:, j])
        return torch.where(ok.any(1), value, nearest.to(value.dtype))


def revert_unneeded(X, X_plus, h, categorical, groups=(), rules: Constraints | None = None) -> np.ndarray:
    """A sparsity post-step (not in the paper): each row's changed features are tried one at a
    time, the smallest change first, back at x's value; a revert is kept where h still accepts
    the recourse (h(x+) > 0.5) and every rule still holds. A one-hot group reverts as a whole.
    X, X_plus (M, D) -> (M, D) float32, changing no more features than X_plus does."""
    X, out = np.asarray(X, dtype=np.float32), np.array(X_plus, dtype=np.float32)
    units = [list(g) for g in groups] + [[j] for j in np.flatnonzero(~in_groups(groups, X.shape[1]))]
    change = np.stack([np.abs(out[:, u] - X[:, u]).sum(1) for u in units], axis=1)     # (M, U)
    order = np.argsort(change, axis=1, kind="stable")                                  # smallest first
    rows = np.arange(len(X))
    for r in range(len(units)):
        unit = order[:, r]                                                              # (M,) each row's r-th
        candidate = out.copy()
        for u, cols in enumerate(units):
            mine = unit == u
            candidate[np.ix_(mine, cols)] = X[np.ix_(mine, cols)]
        ok = (change[rows, unit] > 0) & (probability_of_1(h, candidate) > 0.5)
        if rules is not None:
            ok &= ~rules.violated(X, candidate)
        out[ok] = candidate[ok]
    return out


def features_changed(X, X_plus) -> np.ndarray:
    """(M,) int: how many features each recourse changes (beyond float32 rounding)."""
    return (np.abs(np.asarray(X_plus, dtype=np.float64) - np.asarray(X, dtype=np.float64)) > TOLERANCE).sum(axis=1)
