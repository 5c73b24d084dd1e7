"""The paper's method at a laptop's sizes against the authors' recipe, one departure at a
time, on the development split (results/README.md, "The paper's method and the authors'
recipe"; `python experiments.py --only ablation`).

genre.py implements the paper: GenReConfig() is Algorithms 1 and 2 at a laptop's sizes.
The authors' public code differs from the paper, and from this project's laptop recipe,
in several places. Each row of the ablation changes one of them, and nothing else, so
its development Score beside the first row's shows what that piece is worth:

    a config field     lr 1e-4 (App. C.2.4), dropout 0.1 (code), 2x the steps,
                       4 + 4 layers with 4 heads (toward Table 9's 16 + 16 and 8)
    a swapped piece    the authors' version of one named function or class of genre.py
                       or engine.py, swapped in for the fit and the sampling of that row
                       only (`swapped`): fixed bins on [0, 1] that sample their left edge,
                       D_h^- = {h(x) <= gamma} whatever the label, validation pairs over
                       held-out targets, the last checkpoint instead of the best, post-norm
                       blocks (PyTorch's nn.Transformer), and the authors' sampler (bin
                       values as drawn, categoricals rounded at the end, immutables free)

and two rows measure what a difference must exceed to be one: the first row's recipe
trained from another seed of GenRe (the same data, h and development rows), and the
spread of every row over the development seeds.
"""
from __future__ import annotations

import copy
import contextlib
import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

import engine
import genre
from common import project_categoricals
from evaluate import (CACHE_DIR, code_fingerprint, development, fingerprint, fit_metric_lof, fit_one, make_method,
                      metrics_of, pick_test_negatives)
from genre import Bins, GenRe, GenReConfig, Pairs, RecourseTransformer, make_bins
from tables import METRICS

SEEDS = (0, 1)                            # development seeds (evaluate.development), as DEV_SEEDS


# ----------------------------------------------------------------------------- the authors' pieces

def code_bins(X_pos, n_bins):
    """Authors' code: K fixed bins on [0, 1] whatever the data; bin k's kernel centre and
    sampled value is its left edge k / K, its width 1 / K."""
    D = X_pos.shape[1]
    mu = (torch.arange(n_bins) / n_bins).expand(D, n_bins).contiguous()    # (D, K)
    return Bins(mu, torch.full((D,), 1.0 / n_bins), torch.zeros(D), torch.ones(D))


def value_bins(X_pos, n_bins):
    """Sec. 4.2's n_j per feature, at most n_bins: a feature with at most n_bins distinct values
    in D_h^+ gets one kernel per value (the V bins share the values in order, each value's
    copies splitting its mass, with widths a quarter of the smallest gap, so no kernel leaks
    into a neighbour's value); the others keep make_bins' equal bins."""
    bins = make_bins(X_pos, n_bins)                                        # genre.py's, not the swapped name
    mu, w = bins.mu.clone(), bins.w.clone()
    for j in range(X_pos.shape[1]):
        values = torch.unique(X_pos[:, j])
        if 1 < len(values) <= n_bins:
            mu[j] = values[torch.arange(n_bins) * len(values) // n_bins]
            w[j] = torch.diff(values).min() / 4
    return Bins(mu, w, bins.lo, bins.hi)


def code_training_sets(y, p, gamma):
    """Authors' code: the sources are every row h rejects at gamma, whatever its label."""
    y, p = np.asarray(y).reshape(-1), np.asarray(p).reshape(-1)
    return p <= gamma, (y == 1) & (p > gamma)


def heldout_split_pairs(X_neg, X_pos, rules, cfg, settings, seed, device="cpu"):
    """Authors' code: val_frac of the sources and of the targets held out; the validation
    sources are paired with the held-out targets only, the training sources with the rest."""
    rng = np.random.default_rng(seed)
    src, dst = torch.from_numpy(rng.permutation(len(X_neg))), torch.from_numpy(rng.permutation(len(X_pos)))
    n_src, n_dst = int(round(cfg.val_frac * len(src))), int(round(cfg.val_frac * len(dst)))
    immutable = torch.as_tensor(rules.fixed)
    pairs = lambda s, d: genre.make_pairs(X_neg[s], X_pos[d], cfg.lam, immutable, cfg.top_k, settings.pairing, device)
    with contextlib.suppress(Warning):
        val = pairs(src[:n_src], dst[:n_dst]) if n_src and n_dst else None
    return pairs(src[n_src:], dst[n_dst:]), (val if val is not None and len(val.x) else None)


class LastCheckpoint(engine.TrainingLog):
    """Authors' code: it stores model.state_dict() at the best validation loss, but that dict
    holds the live parameter tensors, which training goes on updating: the saved model is
    the last one."""

    def step(self, model, step, total, loss):
        super().step(model, step, total, loss)
        if step == total:
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}


class PostNormEncoderBlock(genre.EncoderBlock):
    def forward(self, x):                                                   # x = norm(x + f(x))
        x = self.ln1(x + self.drop(self.attn(x, x)))
        return self.ln2(x + self.drop(self.ffn(x)))


class PostNormDecoderBlock(genre.DecoderBlock):
    def forward(self, y, memory):
        y = self.ln1(y + self.drop(self.self_attn(y, y, causal=True)))
        y = self.ln2(y + self.drop(self.cross_attn(y, memory)))
        return self.ln3(y + self.drop(self.ffn(y)))


class PostNormTransformer(RecourseTransformer):
    """The paper's "Transformer from PyTorch": nn.Transformer's post-norm blocks."""

    def __init__(self, n_features, cfg):
        super().__init__(n_features, cfg)
        self.encoder = nn.ModuleList(PostNormEncoderBlock(cfg) for _ in range(cfg.n_enc_layers))
        self.decoder = nn.ModuleList(PostNormDecoderBlock(cfg) for _ in range(cfg.n_dec_layers))


@torch.no_grad()
def authors_sample_recourse(model, x, n, u, eps, bins, kinds, tau, sigma, decoder=genre.full_decoder, mask=None,
                            domain=None):
    """Authors' sampler: every feature is its drawn bin's value + sigma eps, later features
    condition on that value, immutables are drawn like the rest, and the categoricals are
    rounded once at the end (a one-hot group to its largest member). It keeps no constraint
    and no domain (mask and domain must be None: the ablation gives neither to this row)."""
    assert mask is None and domain is None, "the authors' sampler keeps no constraints and no domain"
    model.eval()
    memory = model.encode(x)
    next_logits = decoder(model, memory, n)
    x_plus = torch.zeros(len(x) * n, x.shape[1], device=x.device)
    for j in range(x.shape[1]):
        k = genre.draw_bin(next_logits(x_plus, j), u[:, j], tau)
        x_plus[:, j] = bins.mu[j, k] + sigma * eps[:, j]
    categorical = np.array([kind.categorical for kind in kinds])
    groups = {tuple(kind.group_before + [j]) for j, kind in enumerate(kinds) if kind.group_last}
    rounded = project_categoricals(x_plus.cpu().numpy(), categorical, [list(g) for g in groups])
    return torch.from_numpy(rounded).to(x.device)


# ----------------------------------------------------------------------------- the rows

@dataclass
class Variant:
    """One row: GenReConfig overrides, pieces of genre.py / engine.py swapped for the authors'
    ({(module, name): replacement}), GenRe's random_state offset (another seed), and whether
    Algorithm 2 samples in the data's domain (whole numbers whole; the trained model is the
    first row's)."""
    label: str
    config: dict = field(default_factory=dict)
    swaps: dict = field(default_factory=dict)
    seed_offset: int = 0
    in_domain: bool = False


FULL_DECODER = {(engine, "cached_decoder"): genre.full_decoder}   # cached decoding assumes pre-norm blocks
SAMPLING_ONLY = {(genre, "sample_recourse"), (engine, "cached_decoder")}   # swaps that leave the trained model as it is
AUTHORS = {(genre, "make_bins"): code_bins, (genre, "training_sets"): code_training_sets,
           (genre, "split_pairs"): heldout_split_pairs, (engine, "TrainingLog"): LastCheckpoint,
           (genre, "RecourseTransformer"): PostNormTransformer, (genre, "sample_recourse"): authors_sample_recourse,
           **FULL_DECODER}

VARIANTS = [
    Variant("the paper's method at laptop sizes (GenReConfig())"),
    Variant("the same, another GenRe seed", seed_offset=1),
    Variant("integers whole (sampled in the data's domain)", in_domain=True),
    Variant("integers whole, one bin per value (n_j per feature)", swaps={(genre, "make_bins"): value_bins},
            in_domain=True),
    Variant("lr 1e-4 (App. C.2.4)", dict(lr=1e-4)),
    Variant("lr 1e-4, 2x the steps", dict(lr=1e-4, feature_steps=20000)),
    Variant("dropout 0.1 (code)", dict(dropout=0.1)),
    Variant("2x the steps", dict(feature_steps=20000)),
    Variant("4 + 4 layers, 4 heads (toward Table 9)", dict(n_enc_layers=4, n_dec_layers=4, n_heads=4)),
    Variant("bins on [0, 1], left edges (code)", swaps={(genre, "make_bins"): code_bins}),
    Variant("D_h^- = {h <= gamma} (code)", swaps={(genre, "training_sets"): code_training_sets}),
    Variant("validation over held-out targets (code)", swaps={(genre, "split_pairs"): heldout_split_pairs}),
    Variant("the last checkpoint (code)", swaps={(engine, "TrainingLog"): LastCheckpoint}),
    Variant("post-norm blocks (nn.Transformer)", swaps={(genre, "RecourseTransformer"): PostNormTransformer,
                                                        **FULL_DECODER}),
    Variant("the authors' sampler (code)", swaps={(genre, "sample_recourse"): authors_sample_recourse}),
    Variant("all of the authors' pieces above, lr 1e-4, dropout 0.1", dict(lr=1e-4, dropout=0.1), AUTHORS),
]


@contextlib.contextmanager
def swapped(swaps: dict):
    """The variant's pieces in place of genre.py's and engine.py's, restored afterwards."""
    before = {(m, name): getattr(m, name) for m, name in swaps}
    try:
        for (m, name), piece in swaps.items():
            setattr(m, name, piece)
        yield
    finally:
        for (m, name), piece in before.items():
            setattr(m, name, piece)


def fit_variant(bench, variant: Variant, verbose=False) -> GenRe:
    """GenRe fitted with the variant on the benchmark's fit rows, or loaded from the cache
    (keyed by the data, the seed, what the variant changes in training, and the code of this
    file's import closure, evaluate.code_fingerprint: the pieces swapped in, genre.py, and the
    protocol that fits them, so a change to any module below this one retrains), so a row
    that only samples differently reuses a fit."""
    cfg = dataclasses.replace(GenReConfig(), **variant.config)
    model = make_method("genre", bench.seed, {"genre": cfg}, verbose=verbose)
    model.random_state += variant.seed_offset
    trained = sorted(f"{m.__name__}.{name}" for m, name in variant.swaps if (m, name) not in SAMPLING_ONLY)
    key = hashlib.sha1((json.dumps([trained, dataclasses.asdict(cfg), variant.seed_offset])
                        + code_fingerprint("ablation")).encode()).hexdigest()[:10]
    path = os.path.join(bench.cache_dir, f"ablation_{bench.ds.name}_{fingerprint(bench.ds)}_seed{bench.seed}_{key}.pt")
    with swapped(variant.swaps):
        if os.path.exists(path):
            with contextlib.suppress(ValueError):
                return GenRe.load(path, h=bench.h, verbose=verbose)
        fit_one(model, bench)
        model.save(path)
    return model


def score_variant(bench, variant: Variant, X_dev, lof) -> dict:
    """The protocol's metrics of the variant's recourse for the development negatives X_dev,
    its training seconds and optimiser steps, and how many distinct recourses it gave."""
    t0 = time.time()
    model = copy.copy(fit_variant(bench, variant))
    model.domain_ = bench.ds.domain() if variant.in_domain else None
    with swapped(variant.swaps):
        X_plus = model.recourse(X_dev)
    return {**metrics_of(X_dev, X_plus, bench.oracle, lof, bench.ds.immutable),
            "fit_seconds": model.fit_seconds_, "steps": model.history_[-1]["step"] if hasattr(model, "history_") else None,
            "distinct": int(len(np.unique(X_plus, axis=0))), "n": len(X_dev), "seconds": time.time() - t0}


def ablation_scores(name: str, seeds=SEEDS, n_test: int = 200, cache: str | None = None, log=print) -> dict:
    """Every variant on the development split of one data set: {label: [metrics dict per seed]}."""
    out = {v.label: [] for v in VARIANTS}
    for seed in seeds:
        bench = development(name, seed, cache or CACHE_DIR, verbose=False)
        X_dev, lof = pick_test_negatives(bench, n_test), fit_metric_lof(bench)
        for i, variant in enumerate(VARIANTS):
            r = score_variant(bench, variant, X_dev, lof)
            out[variant.label].append(r)
            log(f"[{name} dev seed {seed}] ablation {i + 1}/{len(VARIANTS)} {variant.label}: "
                f"score {r['score']:.3f} ({r['fit_seconds']:.0f}s)")
    return out


def variant_rows(scores: dict) -> dict:
    """{data set: ablation_scores(...)} -> rows of means, the sample std over seeds, and the
    mean and std of the paired change against the first row, seed by seed."""
    first = VARIANTS[0].label
    rows = []
    for variant in VARIANTS:
        row = {"label": variant.label, "datasets": {}}
        for name, by_label in scores.items():
            runs, base = by_label[variant.label], by_label[first]
            mean = lambda k: float(np.mean([r[k] for r in runs]))
            change = np.array([r["score"] - b["score"] for r, b in zip(runs, base)])
            row["datasets"][name] = {
                **{k: mean(k) for k in (*METRICS, "fit_seconds", "distinct")},
                "score_std": float(np.std([r["score"] for r in runs], ddof=1)) if len(runs) > 1 else None,
                "change": float(change.mean()),
                "change_std": float(change.std(ddof=1)) if len(change) > 1 else None,
                "score_per_seed": [r["score"] for r in runs]}
        rows.append(row)
    return {"rows": rows, "first": first}
