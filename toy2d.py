"""The paper's 2-D pictures: Figure 2 (recourse by method) and Figure 5 (learned densities).

    python toy2d.py                       # all three toys: figures/ and results/toy2d.json
    python toy2d.py --datasets moons --quick         # a smoke test, written under /tmp/toy2d/

On the toy data sets moons, circles and corr (the authors' code) the whole pipeline
of evaluate.py runs (oracle, drawn labels, classifier h), then:

  Figure 2, figures/toy2d_recourse.png: rows are data sets, columns are the
      methods of COLUMNS: the paper's Wachter, PROBE, CRUDS and GenRe, with
      NNR (D_h^+) beside GenRe. Each panel shows the training points, h's
      decision boundary h = 0.5, and test negatives joined by a line to their
      recourse. GenRe draws several samples per negative (its diversity) and
      keeps the one h rates highest (Sec. 5.1, best of 10).
  Figure 5, figures/toy2d_density.png (Sec. 5.4): for two negatives x per data
      set, the learned conditional density R_theta(x+ | x), computed exactly on
      a grid, beside an unconditional density model of P(x | y+) of the same
      transformer family (decoder only, twice the layers) trained on the same
      positives D_h^+.
  results/toy2d.json: the printed Cost, Validity, LOF and Score of every toy
      and method (report.py renders results/README.md's toy table from it).

The conditional density should sit on the positives near x (cheap, valid,
plausible); the unconditional one spreads over every positive. That contrast is
the paper's argument for learning R(x+ | x) rather than P(x | y+).

Only the default run (all three toys, seed 0, no --quick, no --out) writes the
project's figures/ and results/; --out DIR puts the figures and toy2d.json under
DIR (--results names another JSON file); any other run writes under the temp
folder (/tmp/toy2d/).

Shape letters as in genre.py: B batch, D features (2 here), E model width,
K bins, G grid points.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import math
import shlex
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn

import evaluate
from baselines import NNR, PROBE, Wachter
from common import (atomic_write, command_line, check_folder, child_seed, int_at_least, non_negative_int,
                    positive_int, set_seed)
from datasets import TOYS
from generative import CRUDS
from engine import Settings
from genre import BinHead, EncoderBlock, FeatureEmbedding, GenRe, GenReConfig, jensen_loss, soft_labels
from tables import METRICS
SCRATCH = os.path.join(tempfile.gettempdir(), "toy2d")                     # where non-default runs write
HERE = os.path.dirname(os.path.abspath(__file__))                          # the published folders are the project's


# -----------------------------------------------------------------------------
# Configuration

def toy_config(quick=False):
    """GenRe's settings for the 2-D toys.

    The paper's method (GenReConfig(): lambda 5, 50 bins, tau 10, sigma 0, the best of
    10 by h) with a transformer of four heads and a wider feed-forward layer, trained for
    a fixed 800 steps at lr 1e-3, because D = 2 and |D_h^-| is a few hundred rows, so the
    whole script fits in a few CPU minutes. --quick shrinks it to a smoke test (the
    figures will look rough). The best checkpoint is looked for every TOY_SETTINGS.eval_every steps.
    """
    cfg = GenReConfig(n_heads=4, d_ff=64, lr=1e-3, batch_size=256, steps=800)
    if quick:
        cfg = dataclasses.replace(cfg, d_model=16, n_heads=2, d_ff=32, n_enc_layers=1, n_dec_layers=1, steps=60)
    return cfg


TOY_SETTINGS = Settings(eval_every=100)


# -----------------------------------------------------------------------------
# Data, h, and the recourse methods

def columns(cfg, quick=False, cache_dir=None, verbose=False):
    """Figure 2's columns, in order: (label, seed -> unfitted recourse method).

    The paper shows Wachter, PROBE, CRUDS and GenRe; NNR (D_h^+), the nearest of
    GenRe's own training targets (Sec. 5.5), stands beside GenRe. The baselines
    run as designed (baselines.py, generative.py). --quick shortens the searches
    of Wachter, PROBE and CRUDS and CRUDS's CSVAE training, nothing else.
    """
    short = lambda full, quick_value: quick_value if quick else full
    return [
        ("Wachter", lambda seed: Wachter(random_state=seed, n_iter=short(1000, 200))),
        ("PROBE", lambda seed: PROBE(random_state=seed, n_rounds=short(20, 3), n_mc=short(10_000, 1000))),
        ("CRUDS", lambda seed: CRUDS(random_state=seed, cache_dir=cache_dir, verbose=verbose,
                                     vae_epochs=short(20, 3), n_iter=short(2000, 200))),
        ("NNR (D_h^+)", lambda seed: NNR(pool="dhplus")),
        ("GenRe", lambda seed: GenRe(cfg, random_state=seed, verbose=verbose, settings=TOY_SETTINGS)),
    ]


METHOD_NAMES = tuple(label for label, _ in columns(None))
LABELS = {m: m.replace("D_h^+", "$D_h^+$") for m in METHOD_NAMES}        # for the titles


def recourse_by_method(bench, X_neg, lof, cfg, args):
    """Fit every column's method on the train split (evaluate.fit_one: drawn labels, h and
    the feature roles only), each with its own random stream of the seed, and give recourse
    to X_neg (M, D). Returns the fitted methods, recourses (M, D) and scores by label, and
    the seconds each took."""
    methods, recourse, scores, seconds = {}, {}, {}, {}
    for label, make in columns(cfg, args.quick, bench.cache_dir, args.verbose):
        t = time.time()
        methods[label] = evaluate.fit_one(make(child_seed(bench.seed, label) % 2**31), bench)
        recourse[label] = methods[label].recourse(X_neg)                    # (M, D)
        scores[label] = evaluate.metrics_of(X_neg, recourse[label], bench.oracle, lof, bench.ds.immutable)
        seconds[label] = time.time() - t
    return methods, recourse, scores, seconds


# -----------------------------------------------------------------------------
# The unconditional density model P(x | y+) (Sec. 5.4)

class CausalBlock(EncoderBlock):
    """A decoder block without cross-attention: causal self-attention, then a
    feed-forward layer. Same parts (and pre-norm) as genre.EncoderBlock; the only
    change is the causal mask, so position j sees x_{<j} only."""

    def forward(self, y):                                                   # (B, D, E) -> (B, D, E)
        a = self.ln1(y)
        y = y + self.drop(self.attn(a, a, causal=True))
        return y + self.drop(self.ffn(self.ln2(y)))


class UnconditionalTransformer(nn.Module):
    """P(x | y+) = prod_j P(x_j | x_{<j}): GenRe's decoder with no encoder to attend to.

    The decoder reads [BOS, x_0, ..., x_{D-2}], so position j predicts feature j,
    with the same embedding, kernel-density head and bins as R_theta.
    Paper (Sec. 5.4): "Since P(X|y+) does not need an encoder, its transformer uses
    twice the number of layers as the conditional one."
    """

    def __init__(self, n_features, cfg):
        super().__init__()
        D, E = n_features, cfg.d_model
        self.embed = FeatureEmbedding(D, E)
        self.pos = nn.Parameter(0.02 * torch.randn(D, E))
        self.bos = nn.Parameter(0.02 * torch.randn(E))
        self.blocks = nn.ModuleList(CausalBlock(cfg) for _ in range(2 * cfg.n_dec_layers))
        self.norm = nn.LayerNorm(E)
        self.head = BinHead(D, E, cfg.n_bins)

    def forward(self, x):
        """Teacher forcing: x (B, D) -> logits (B, D, K) of every feature given the earlier ones."""
        B = x.shape[0]
        y = torch.cat([self.bos.expand(B, 1, -1), self.embed(x[:, :-1])], dim=1)   # (B, D, E)
        y = y + self.pos
        for block in self.blocks:
            y = block(y)
        return self.head(self.norm(y))                                      # (B, D, K)


def fit_unconditional(X_pos, bins, cfg, seed):
    """Maximum likelihood on D_h^+ with GenRe's loss (Eq. 8 with x+ = x, no x to condition on):
    the same bins, steps and learning rate.

    Paper: trained on the positives. Here: on all of D_h^+ (GenRe holds 10% of
    its targets out for checkpoint selection; this keeps the last step instead).
    seed: its own stream of the run's seed.
    """
    set_seed(seed)
    X = torch.as_tensor(X_pos)
    model = UnconditionalTransformer(X.shape[1], cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(seed)
    batch = min(cfg.batch_size, len(X))
    model.train()
    for step in range(cfg.steps):
        x = X[torch.randint(len(X), (batch,), generator=g)]                 # (B, D)
        loss = jensen_loss(model(x), soft_labels(x, bins))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


# -----------------------------------------------------------------------------
# Exact densities on a grid

def kernel_log_density(logits, x, bins):
    """log of a model's density at x (Sec. 4.2), the product along the autoregressive order
    of each feature's kernel density:

        R(x) = prod_j sum_k p_jk N(x_j; mu_jk, w_j^2),    p_j = softmax_k(logits_j)

    The paper's kernel is the RBF K((x - mu) / w); its normalised form, a Gaussian with std
    w (one bin width, as Eq. 8's soft labels), makes each factor integrate to one, so R is
    a density. The logits are at tau = 1: the learned distribution, not the sharpened one
    Algorithm 2 samples. logits (B, D, K) of feature j given x_{<j}, x (B, D) -> (B,).
    """
    log_p = torch.log_softmax(logits, dim=-1)                               # (B, D, K)
    u = (x[:, :, None] - bins.mu) / bins.w[:, None]                         # (B, D, K)
    log_normal = -0.5 * u ** 2 - torch.log(bins.w[:, None] * math.sqrt(2 * math.pi))
    return torch.logsumexp(log_p + log_normal, dim=-1).sum(dim=1)           # (B, D) -> (B,)


@torch.no_grad()
def grid_density(logits_of, grid, bins):
    """Density of a model at every grid point, in one teacher-forced forward pass.

    logits_of: x (G, D) -> logits (G, D, K), feature j's logits given x_{<j}.
    Both models fit this: R_theta(. | x) as x+ -> model_(x repeated, x+), and
    P(. | y+) as x -> model(x). grid (G, D) -> density (G,).
    """
    return kernel_log_density(logits_of(grid), grid, bins).exp()


def conditional_logits(genre, x):
    """x+ (G, D) -> logits (G, D, K) of R_theta(x+_j | x, x+_{<j}) for one fixed x (D,)."""
    x = torch.as_tensor(x, dtype=torch.float32)
    return lambda grid: genre.model_(x.expand(len(grid), -1), grid)


def make_grid(lo, hi, n):
    """An n x n grid over [lo, hi]^2: points (n*n, 2), the axis (n,) and the cell area."""
    axis = np.linspace(lo, hi, n, dtype=np.float32)
    g1, g2 = np.meshgrid(axis, axis)                                        # (n, n) each; g1 varies along columns
    points = torch.from_numpy(np.stack([g1.ravel(), g2.ravel()], axis=1))   # (n*n, 2)
    return points, axis, float((axis[1] - axis[0]) ** 2)


# -----------------------------------------------------------------------------
# One data set, end to end

def spread_pair(X):
    """The two rows of X farthest apart (L1), so the two density panels differ. (2, D)"""
    dist = np.abs(X[:, None, :] - X[None, :, :]).sum(-1)                   # (M, M)
    i, j = np.unravel_index(dist.argmax(), dist.shape)
    return X[[min(i, j), max(i, j)]]


def density_points(bench):
    """Figure 5's two x: test rows like the sources GenRe trains on (y = 0 and
    h(x) <= 0.5, as D_h^-), not negatives h misjudges on the positives' side,
    and far apart. (2, D)"""
    ds = bench.ds
    return spread_pair(ds.X_test[(ds.y_test == 0) & (bench.h.predict_proba(ds.X_test) <= 0.5)])


def densities(genre, uncond, pair, n_grid):
    """R_theta(x+ | x) for each x of the pair, and P(x | y+), on an n x n grid over [-0.1, 1.1]^2."""
    grid, axis, _ = make_grid(-0.1, 1.1, n_grid)
    on_grid = lambda logits_of: grid_density(logits_of, grid, genre.bins_).numpy().reshape(n_grid, n_grid)
    return axis, {"conditional": [on_grid(conditional_logits(genre, x)) for x in pair],
                  "unconditional": on_grid(uncond)}


def print_scores(name, bench, n_neg, n_pos, scores, seconds):
    """Print one toy's metrics, one line per method (the numbers results/toy2d.json holds)."""
    print(f"\n{name}: h test accuracy {bench.h_test_accuracy:.2f}; {n_neg} test negatives, |D_h^+| = {n_pos}")
    print(f"  {'method':12s} Validity   LOF   Cost  Score")
    for m, s in scores.items():
        print(f"  {m:12s} {s['validity']:8.2f} {s['lof']:5.2f} {s['cost']:6.3f} {s['score']:6.3f}")
    print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()), flush=True)


def run_toy(name, args, cfg):
    """Everything both figures need for one toy data set; prints metrics and seconds per stage."""
    seconds, t = {}, time.time()
    bench = evaluate.prepare(name, args.seed, cache_dir=args.cache, verbose=False)
    ds = bench.ds
    X_neg = evaluate.pick_test_negatives(bench, len(ds.X_test))             # every test row with h(x) <= 0.5
    lof = evaluate.fit_metric_lof(bench)                                    # the metric's; no method sees it
    seconds["oracle + h"] = time.time() - t

    methods, recourse, scores, method_seconds = recourse_by_method(bench, X_neg, lof, cfg, args)
    seconds.update(method_seconds)
    genre = methods["GenRe"]
    samples = genre.sample(X_neg)                                           # (M, n_samples, D); best = recourse

    t = time.time()
    X_pos = ds.X_train[evaluate.dh_plus(ds, bench.h, cfg.gamma)]
    uncond = fit_unconditional(X_pos, genre.bins_, cfg,
                               child_seed(args.seed, "unconditional") % 2**31)
    pair = density_points(bench)
    axis, density = densities(genre, uncond, pair, args.grid)
    seconds["densities"] = time.time() - t

    print_scores(name, bench, len(X_neg), len(X_pos), scores, seconds)
    rng = np.random.default_rng(child_seed(args.seed, "shown"))
    shown = np.sort(rng.choice(len(X_neg), min(args.n_show, len(X_neg)), replace=False))  # Figure 2's negatives
    return dict(name=name, bench=bench, X_neg=X_neg, shown=shown, recourse=recourse, samples=samples,
                scores=scores, pair=pair, axis=axis, density=density, X_pos=X_pos,
                methods=methods, genre=genre, uncond=uncond, seconds=seconds)


def results_json(runs, command, seed, seconds):
    """What results/toy2d.json holds: per toy, the test negatives, h's accuracy, and each
    method's Cost, Validity, LOF and Score (= Validity + LOF - Cost / d), in column order."""
    toys = {r["name"]: {"n_test_negatives": len(r["X_neg"]),
                        "h_test_accuracy": r["bench"].h_test_accuracy,
                        "methods": {m: {k: r["scores"][m][k] for k in METRICS} for m in METHOD_NAMES}}
            for r in runs}
    return {"command": command, "seed": seed, "seconds": round(seconds, 1), "toys": toys}


# -----------------------------------------------------------------------------
# Figures

NEG_LIGHT, POS_BLUE, NEG_DARK = "#f3a5a5", "#5b8fd9", "#8b0000"


def draw_data(ax, bench, axis):
    """Training points (drawn labels) and h's decision boundary h(x) = 0.5."""
    ds = bench.ds
    ax.scatter(*ds.X_train[ds.y_train == 0].T, s=5, c=NEG_LIGHT, lw=0)
    ax.scatter(*ds.X_train[ds.y_train == 1].T, s=5, c=POS_BLUE, lw=0)
    g1, g2 = np.meshgrid(axis, axis)
    p = bench.h.predict_proba(np.stack([g1.ravel(), g2.ravel()], 1)).reshape(g1.shape)
    ax.contour(g1, g2, p, levels=[0.5], colors="k", linewidths=1, linestyles="--")


def draw_recourse(ax, X, X_plus, samples=None):
    """Each x (dark red) joined to its recourse; GenRe's other samples as faint lines."""
    if samples is not None:
        for x, S in zip(X, samples):
            for s in S:
                ax.plot([x[0], s[0]], [x[1], s[1]], c="0.35", lw=0.5, alpha=0.5)
    for x, xp in zip(X, X_plus):
        ax.plot([x[0], xp[0]], [x[1], xp[1]], c="k", lw=1)
    ax.scatter(*X_plus.T, s=12, c="k", zorder=3)
    ax.scatter(*X.T, s=18, c=NEG_DARK, zorder=4)


def style(ax, lim=(-0.05, 1.05)):
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def figure_recourse(runs, n_shown_samples):
    """Figure 2: rows data sets, one column per method (COLUMNS); titles carry Validity, LOF, Cost."""
    import matplotlib.pyplot as plt       # here, not at the top: only the figures need matplotlib (slow to load)
    n_cols = len(METHOD_NAMES)
    fig, axes = plt.subplots(len(runs), n_cols, figsize=(3.3 * n_cols + 0.4, 3.5 * len(runs) + 0.9),
                             squeeze=False, layout="constrained")
    for row, r in zip(axes, runs):
        X = r["X_neg"][r["shown"]]                                          # (n_show, D)
        for ax, m in zip(row, METHOD_NAMES):
            draw_data(ax, r["bench"], r["axis"])
            extra = r["samples"][r["shown"], :n_shown_samples] if m == "GenRe" else None
            draw_recourse(ax, X, r["recourse"][m][r["shown"]], extra)
            s = r["scores"][m]
            ax.set_title(f"{r['name']}: {LABELS[m]}\nVal {s['validity']:.2f}  LOF {s['lof']:.2f}  "
                         f"Cost {s['cost']:.2f}", fontsize=11)
            style(ax)
    n_neg = ", ".join(f"{r['name']} {len(r['X_neg'])}" for r in runs)
    fig.suptitle("Recourse on the 2-D toys (Fig. 2). Light red / blue: training negatives / positives; "
                 "dashed: h = 0.5.\nDark red: test negatives, joined to their recourse (black); "
                 f"GenRe: {n_shown_samples} of its samples (grey) and the best of 10 by h.\n"
                 f"Metrics over all test negatives ({n_neg}).", fontsize=11)
    return fig


def draw_density(ax, axis, density, X_pos, x, title):
    """Filled contours of a density on the grid, the positives D_h^+, and x as a large red dot."""
    g1, g2 = np.meshgrid(axis, axis)
    levels = np.linspace(0, density.max(), 12)[1:]                          # the zero level stays white
    ax.contourf(g1, g2, density, levels=levels, cmap="viridis", extend="max")
    ax.scatter(*X_pos.T, s=2, c="w", alpha=0.5, lw=0)
    ax.scatter(*x, s=90, c="red", edgecolors="k", zorder=4)
    ax.set_title(title, fontsize=10)
    style(ax)


def figure_density(runs):
    """Figure 5: per data set and each of two negatives x, R_theta(x+|x) beside P(x|y+)."""
    import matplotlib.pyplot as plt       # here, not at the top: only the figures need matplotlib (slow to load)
    fig, axes = plt.subplots(len(runs), 4, figsize=(13, 3.4 * len(runs) + 0.6), squeeze=False,
                             layout="constrained")
    for row, r in zip(axes, runs):
        for i, x in enumerate(r["pair"]):
            draw_density(row[2 * i], r["axis"], r["density"]["conditional"][i], r["X_pos"], x,
                         f"{r['name']}: R(x+ | x), conditional")
            draw_density(row[2 * i + 1], r["axis"], r["density"]["unconditional"], r["X_pos"], x,
                         f"{r['name']}: P(x | y+), unconditional")
    fig.suptitle("Learned densities (Fig. 5), exact on a grid: GenRe's R(x+ | x) for the red x, beside a "
                 "decoder-only model of P(x | y+)\n(twice the layers) trained on the same positives "
                 "$D_h^+$ (white dots). Brighter = denser; each panel has its own scale.", fontsize=10)
    return fig


def save(fig, path):
    """Write a figure whole (common.atomic_write) and free it."""
    import matplotlib.pyplot as plt       # here, not at the top: only the figures need matplotlib (slow to load)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


# -----------------------------------------------------------------------------
# Command line

def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Reproduce the paper's 2-D figures: Figure 2 (Wachter, PROBE, CRUDS, NNR (D_h^+) "
                    "and GenRe recourse on moons, circles, corr) and Figure 5 (GenRe's conditional "
                    "density R(x+|x) beside an unconditional P(x|y+)). Prints Validity, LOF, Cost and "
                    "Score per data set and method and stores them as JSON. Only the default run (all "
                    "toys, seed 0, no --quick, no --out) writes the project's figures/ and "
                    f"results/toy2d.json; any other run writes into --out, else {SCRATCH}.")
    p.add_argument("--out", default=None,
                   help="folder for toy2d_recourse.png, toy2d_density.png and (unless --results) toy2d.json "
                        f"(default: the project's figures/ for the default run, else {SCRATCH})")
    p.add_argument("--results", default=None,
                   help="JSON file for the printed metrics (default: toy2d.json in --out if given, else "
                        f"the project's results/toy2d.json for the default run, else {os.path.join(SCRATCH, 'toy2d.json')})")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="run seed (default 0): the oracle, drawn labels, h and every method each draw "
                        "from their own stream of it; the same seed draws the same figures")
    p.add_argument("--datasets", nargs="+", choices=TOYS, default=list(TOYS),
                   help="which toy data sets, one figure row each (default: all three)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny GenRe and unconditional model, shorter PROBE and CRUDS: a smoke test, "
                        "rough figures")
    p.add_argument("--n-show", type=positive_int, default=15,
                   help="test negatives drawn in Figure 2 (default 15; metrics use all of them)")
    p.add_argument("--n-samples-shown", type=non_negative_int, default=5,
                   help="GenRe samples drawn per negative in Figure 2 besides the best (default 5)")
    p.add_argument("--grid", type=int_at_least(2), default=241,
                   help="grid points per axis over [-0.1, 1.1] for the densities (default 241, "
                        "a step of 0.005, well below the kernels' width)")
    p.add_argument("--cache", default=evaluate.CACHE_DIR,
                   help="folder for the cached oracle, drawn labels, h and CRUDS's CSVAE (default the "
                        "project's cache/, shared with evaluate.py)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads (default 1: the toy tensors are tiny, so extra "
                        "threads cost more than they give)")
    p.add_argument("--verbose", action="store_true", help="print GenRe's and CRUDS's training progress")
    return p.parse_args(argv)


def output_paths(args):
    """(figure folder, JSON path): everything under --out when given (the JSON elsewhere only
    if --results says so); the project's published places only for the default run."""
    default_run = not args.quick and args.seed == 0 and sorted(args.datasets) == sorted(TOYS)
    folder = args.out or (os.path.join(HERE, "figures") if default_run else SCRATCH)
    published = os.path.join(HERE, "results", "toy2d.json") if default_run and not args.out else None
    return folder, args.results or published or os.path.join(folder, "toy2d.json")


def check_outputs(out: str, results: str, cache: str) -> None:
    """Refuse, before any training, output places that cannot take the files."""
    check_folder(out, "--out")
    if os.path.isdir(results):
        raise ValueError(f"--results {results} is a folder; name a JSON file")
    check_folder(os.path.dirname(results) or ".", "--results' folder")
    check_folder(cache, "--cache")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    out, results = output_paths(args)
    check_outputs(out, results, args.cache)
    torch.set_num_threads(args.threads)
    cfg = toy_config(args.quick)
    t0 = time.time()
    runs = [run_toy(name, args, cfg) for name in args.datasets]
    paths = (os.path.join(out, "toy2d_recourse.png"), os.path.join(out, "toy2d_density.png"))
    save(figure_recourse(runs, args.n_samples_shown), paths[0])
    save(figure_density(runs), paths[1])
    data = results_json(runs, shlex.join(["python", "toy2d.py", *argv]), args.seed, time.time() - t0)
    atomic_write(results, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))
    print(f"\nfigures: {paths[0]}, {paths[1]}; numbers: {results}; total {data['seconds']:.1f}s")
    return runs


def cli(argv=None) -> int:
    """main() for the command line (common.command_line: one-line errors, Ctrl-C)."""
    return command_line(lambda a: main(a) and 0, argv)


if __name__ == "__main__":
    sys.exit(cli())
