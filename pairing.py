"""Eq. 6 at scale: the pairing distribution Q from a prefilter, re-ranked exactly.

genre.pairing_distribution computes every cost C(x, x+) = ||x - x+||_1 between
the N- sources and the N+ targets, then a top-K over all N+ per source:
O(N- N+ D) work, and on a CPU the top-K over N+ costs more than the costs do.
prefiltered_pairing returns the same (idx, prob, keep) with two savings:

1. Immutable groups (exact). C = +inf wherever an immutable feature differs,
   so a source can only be paired with targets that share all its immutable
   values. The targets are grouped by those values and each source searches
   its own group: with two binary immutables (sex, race) a quarter of D_h^+.
2. An L2 prefilter (approximate). Within the group, the n_candidates targets
   nearest in squared L2, ||x||^2 - 2 x.x+ + ||x+||^2 (one BLAS matmul per
   block of sources), are re-ranked by their exact L1 cost; Q keeps the top K
   of those and is renormalised as in genre.pairing_distribution.

GenRe uses it with GenReConfig(pairing="prefilter"); "exact" stays the default.

Where it is exact. A group of at most n_candidates targets is searched
exactly (plain L1). Otherwise the prefilter can miss an L1 neighbour that L2
ranks lower. It cannot for a row whose K-th L1 cost among its candidates is at
most r, the L2 distance of its farthest candidate: every target left out has
L2 >= r, and ||v||_1 >= ||v||_2, so its L1 cost is >= r too. Such rows are
"certified" (reported in `stats`); in D >= 10 dimensions few are, since L1 is
typically ~0.8 sqrt(D) times L2. The measured error against the exact top-K
(recall, and the total variation between the two Q's per row) is in
BENCHMARKS.md, made by `python bench.py --pairing-error`.

Shapes: N- sources, N+ targets, D features, G a group's targets, c a block of
sources, C candidates per source, T = min(top_k, N+) partners kept per source.
"""
from __future__ import annotations

import warnings

import torch

from common import l1_cost


def immutable_groups(X_src, X_dst, immutable):
    """A group id per source and per target: equal ids share every immutable value.

    X_src (N-, D), X_dst (N+, D), immutable (D,) bool -> (N-,), (N+,) int64.
    Values are compared exactly (torch.unique), as common.l1_cost does.
    """
    if not immutable.any():
        return (torch.zeros(len(X_src), dtype=torch.long, device=X_src.device),
                torch.zeros(len(X_dst), dtype=torch.long, device=X_dst.device))
    keys = torch.cat([X_src[:, immutable], X_dst[:, immutable]])              # (N- + N+, I)
    _, gid = torch.unique(keys, dim=0, return_inverse=True)
    return gid[:len(X_src)], gid[len(X_src):]


def l2_candidates(xs, Xg, n):
    """The n targets nearest each source in L2, and a lower bound r on the L2
    distance of every target left out. xs (c, D), Xg (G, D) -> (c, n) indices, (c,) r.

    The squared distances come from one matmul, ||x||^2 - 2 x.x+ + ||x+||^2, whose
    float32 rounding (up to ~1e-6 of the norms) is taken off r so the bound holds.
    """
    x_sq, g_sq = (xs * xs).sum(1, keepdim=True), (Xg * Xg).sum(1)           # (c, 1), (G,)
    d2 = torch.addmm(g_sq, xs, Xg.T, alpha=-2) + x_sq                        # (c, G) squared L2
    d2, cand = torch.topk(d2, n, dim=1, largest=False, sorted=False)         # (c, n)
    slack = 1e-5 * (x_sq.squeeze(1) + g_sq.max())                            # (c,) rounding margin
    return cand, (d2.max(dim=1).values - slack).clamp(min=0).sqrt()


def group_top_k(xs, Xg, lam, T, n_candidates, constraints=None):
    """Top-T log-weights -lam C(x, x+) of sources xs over one group's targets Xg.

    Exact if the group has at most n_candidates targets; else the L2 candidates
    re-ranked by exact L1. xs (c, D), Xg (G, D) -> idx (c, t) into Xg, cheapest
    first, log-weights (c, t), certified (c,) bool; t = min(T, G). constraints
    (optional): C = inf for a target that breaks one (among the candidates only).
    """
    no_immutables = torch.zeros(xs.shape[1], dtype=torch.bool, device=xs.device)
    t = min(T, len(Xg))
    if len(Xg) <= n_candidates:                                              # exact: every target
        cost = l1_cost(xs, Xg, no_immutables)                                # (c, G)
        breaks = None if constraints is None else constraints.pair_breaks(xs, Xg)
        cost = cost if breaks is None else cost.masked_fill(breaks, float("inf"))
        logq, idx = torch.topk(-lam * cost, t, dim=1)                        # (c, G) -> (c, t)
        return idx, logq, torch.ones(len(xs), dtype=torch.bool, device=xs.device)
    cand, r = l2_candidates(xs, Xg, n_candidates)                            # (c, C), (c,)
    cost = (xs[:, None, :] - Xg[cand]).abs().sum(-1)                         # (c, C, D) -> (c, C) exact L1
    breaks = None if constraints is None else constraints.pair_breaks(xs, Xg[cand])
    cost = cost if breaks is None else cost.masked_fill(breaks, float("inf"))
    logq, pick = torch.topk(-lam * cost, t, dim=1)                           # (c, t)
    certified = -logq[:, -1] / lam <= r                                      # K-th L1 <= any outsider's L1
    return cand.gather(1, pick), logq, certified


def prefiltered_pairing(X_src, X_dst, lam, immutable, top_k, n_candidates=2048, chunk=512,
                        stats=None, constraints=None):
    """Eq. 6 truncated to its top K, as genre.pairing_distribution, searched per
    immutable group with an L2 prefilter re-ranked by exact L1 (module docstring):

        Q(x+ | x) = exp(-lam C(x, x+)) / sum over the kept x' of exp(-lam C(x, x')),
        C(x, x+)  = ||x - x+||_1,  or +inf if any immutable feature differs.

    X_src (N-, D), X_dst (N+, D) float tensors; immutable (D,) bool tensor.
    Returns idx (N-, T) int32 indices into X_dst, prob (N-, T) rows summing to
    one, and keep (N-,) bool; T = min(top_k, N+). Sources with no target sharing
    their immutables are dropped (keep = False). A source whose group has fewer
    than T targets gets its best target repeated with probability 0 in the spare
    columns (the exact path puts other groups' targets there, also at 0).
    Memory: O(N- T) for the result plus O(chunk * (G + C D)) working space.
    If `stats` is a dict, it gets "certified", an (N-,) bool of the rows whose
    top K is provably the exact one. constraints (constraints.Constraints, optional): as
    in genre.pairing_distribution, among each source's candidates.
    """
    if X_src.ndim != 2 or X_dst.ndim != 2 or X_src.shape[1] != X_dst.shape[1]:
        raise ValueError(f"X_src {tuple(X_src.shape)} and X_dst {tuple(X_dst.shape)} must be (rows, D) "
                         "with the same D")
    if len(X_dst) == 0:
        raise ValueError("X_dst is empty: there is no target to pair with")
    if n_candidates < top_k:
        raise ValueError(f"n_candidates ({n_candidates}) must be at least top_k ({top_k})")
    T = min(top_k, len(X_dst))
    idx = torch.zeros(len(X_src), T, dtype=torch.int32, device=X_src.device)      # (N-, T)
    prob = torch.zeros(len(X_src), T, dtype=X_src.dtype, device=X_src.device)     # (N-, T)
    keep = torch.zeros(len(X_src), dtype=torch.bool, device=X_src.device)          # (N-,)
    certified = torch.zeros_like(keep)
    src_group, dst_group = immutable_groups(X_src, X_dst, immutable)
    for g in torch.unique(dst_group):
        targets = torch.nonzero(dst_group == g).squeeze(1)                   # (G,) into X_dst
        sources = torch.nonzero(src_group == g).squeeze(1)
        X_group = X_dst[targets]                                             # (G, D)
        for s in range(0, len(sources), chunk):
            rows = sources[s:s + chunk]                                      # (c,)
            i, logq, exact = group_top_k(X_src[rows], X_group, lam, T, n_candidates, constraints)
            t = i.shape[1]
            idx[rows] = targets[i[:, :1]].int()                              # spare columns: the best target
            idx[rows, :t] = targets[i].int()
            prob[rows, :t] = torch.softmax(logq, dim=1)                      # renormalised over the top t
            keep[rows], certified[rows] = torch.isfinite(logq[:, 0]), exact
    if stats is not None:
        stats["certified"] = certified
    if keep.all():
        return idx, prob, keep
    warnings.warn(f"{int((~keep).sum())} of {len(keep)} sources have no target in D_h^+ "
                  "with the same immutable features; they are dropped from the pairs.")
    return idx[keep], prob[keep], keep


def compare_with_exact(idx, prob, idx_exact, prob_exact, n_targets, chunk=256):
    """Per row: recall of the exact top K (share of its nonzero entries that the
    approximate Q also keeps) and total variation 1/2 sum |Q - Q_exact|.

    idx, prob, idx_exact, prob_exact (M, T), the same M rows -> (M,), (M,) float64.
    """
    recall, tv = [], []
    for s in range(0, len(idx), chunk):
        rows = slice(s, s + chunk)
        local = torch.arange(len(idx[rows]))[:, None]                         # (m, 1)
        q = torch.zeros(len(local), n_targets, dtype=torch.float64)          # (m, N+), dense Q
        q_exact = torch.zeros_like(q)
        q.index_put_((local, idx[rows].long()), prob[rows].double(), accumulate=True)
        q_exact.index_put_((local, idx_exact[rows].long()), prob_exact[rows].double(), accumulate=True)
        hit = (q > 0) & (q_exact > 0)
        recall.append(hit.sum(1) / (q_exact > 0).sum(1))
        tv.append(0.5 * (q - q_exact).abs().sum(1))
    return torch.cat(recall), torch.cat(tv)
