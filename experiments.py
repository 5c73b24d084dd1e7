"""Reproduce the paper's evidence on the three benchmarks, and publish it in results/.

    python experiments.py                    # everything, from a cold cache (hours on 2 cores;
                                             # results/README.md lists each unit's minutes)
    python experiments.py --only ablation    # one stage (or several)
    python experiments.py --quick            # a preview of every stage: one seed, 100 test
                                             # negatives, VAEs 10 epochs, into runs/quick/

Stages (--only); every one on adult, compas and heloc unless said:
  ablation     the paper's method against the authors' recipe, one departure at a time, on
               the development split (ablation.py) -> ablation.json
  development  the preset's sampling (tau x the choice among samples) on the development
               split (evaluate.development) -> development.json
  comparison   Table 2 and Table 3: every method of evaluate.TABLE2 but the generative
               baselines, seeds 0-4 -> <data set>.json, with "where GenRe's Score comes
               from" (choice_study); lambda and tau_sigma reuse its seed-0 GenRe
  generative   CCHVAE, REVISE, CRUDS in both modes, same seeds -> <data set>_generative.json
  lambda       Sec. 5.3, Figure 4: GenRe retrained and CRUDS re-run for each lambda (seed 0)
               -> lambda_sweep.json, figures/lambda_sweep.png
  tau_sigma    Table 11: the seed-0 GenRe sampled at other tau and sigma -> tau_sigma.json
  diffusion    Table 4: GenRe beside a tabular diffusion model with Q and with SVDD
               (diffusion.py), seeds 0-4 -> diffusion.json
  fractions    Table 13 (adult): GenRe trained on shares of the training rows, seeds 0-2
               -> fractions.json, figures/fractions.png
  constrained  (adult) every method with actionability constraints, given at fit or at
               recourse time, and without them -> constrained.json
  gaps         gaps.py's studies of where the NAME_paper rows differ from the paper's
               Table 2 (seed 0) -> gaps.json
Then report.py writes results/README.md and the README's tables from those files.

The run is cut into units (a stage on one data set) that --jobs worker processes
(default 2, one core each) run side by side; they share only the cache folder. A unit
that fails is reported at the end and the others go on.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import sys
import time
import traceback

import numpy as np
import torch

import ablation
import gaps
import report
from common import atomic_write, check_folder, child_seed, command_line, provenance
from datasets import ADULT_RULES, load
from evaluate import (CACHE_DIR, DIFFUSION, GENRE_ROWS, HERE, NNR_ROWS, PAPER_ROWS, POST_STEPS, PUBLISHED, TABLE2,
                      check_methods, development, dh_plus, fit_genre, fit_metric_lof, fit_one, log, make_method,
                      metrics_of, metrics_of_rows, oracle_proba, pick_test_negatives, prepare, row_metrics, run_seed,
                      summarise, write_json)
from genre import GenReConfig, pairing_distribution, training_sets
from tables import METRICS

DATASETS = ("adult", "compas", "heloc")
LAMBDAS = (0.5, 1.0, 2.5, 5.0, 10.0)      # Sec. 5.3
TAUS = (5.0, 10.0, 15.0)                  # Table 11
SIGMAS = (0.0, 2e-4, 2e-2)                # Table 11 (a subset of its 2e-7 ... 2e-2)
DEV_SEEDS = (0, 1)                        # development study seeds (its own split of the training rows)
QUICK_N_TEST, QUICK_VAE_EPOCHS = 100, 10  # --quick: one seed, half the test negatives and VAE epochs
GENERATIVE = ("cchvae", "cchvae_paper", "revise", "revise_paper", "cruds", "cruds_paper")


# ----------------------------------------------------------------------------- 1. development study

# The preset's candidates: Algorithm 2's temperature crossed with the choice among the
# samples, all sampling the model GenReConfig() trains. The paper's sampling is tau 10, the
# best of 10 by h (Sec. 5.1). report.candidate_name names each.
SAMPLINGS = [dict(tau=tau, select=select) for tau in (10.0, 5.0) for select in ("h", "plausible")]


def development_scores(name: str, seeds, n_test: int, cache: str) -> dict:
    """Score every candidate on the development split of one data set, for each seed:
    {candidate: [metrics dict per seed]}. The test split is never touched."""
    rows = {}
    for seed in seeds:
        bench = development(name, seed, cache)
        X_dev, lof = pick_test_negatives(bench, n_test), fit_metric_lof(bench)
        genre = fit_genre(bench)
        for sampling in SAMPLINGS:
            r = metrics_of(X_dev, genre.recourse(X_dev, **sampling), bench.oracle, lof, bench.ds.immutable)
            rows.setdefault(report.candidate_name(sampling), []).append(r)
        log(f"[{name} dev seed {seed}] candidates scored")
    return rows


def rank_candidates(scores: dict, seeds, n_test: int) -> dict:
    """Rank the candidates by their mean development Score over data sets and seeds; the first
    is the preset's choice. scores: {data set: development_scores(...)}."""
    table = []
    for cand in next(iter(scores.values())):
        means = {name: {k: float(np.mean([r[k] for r in per_cand[cand]])) for k in METRICS}
                 for name, per_cand in scores.items()}
        table.append({"candidate": cand, "datasets": means,
                      "mean_score": float(np.mean([m["score"] for m in means.values()]))})
    table.sort(key=lambda row: -row["mean_score"])
    return {"seeds": list(seeds), "n_test": n_test, "split": "train split cut 80/20 (evaluate.development)",
            "candidates": table, "first": table[0]["candidate"]}


# ----------------------------------------------------------------------------- 2. comparison

def comparison(dataset: str, seeds, methods, n_test: int, cache: str, vae_epochs=None):
    """Every method on one data set over seeds; returns (results, what the studies reuse at seed 0)."""
    benches, per_seed, choices, reuse = [], [], [], None
    for seed in seeds:
        bench = prepare(dataset, seed, cache)
        scores, fitted, X_neg, lof = run_seed(bench, methods, n_test, vae_epochs=vae_epochs)
        benches.append(bench)
        per_seed.append(scores)
        if "genre" in fitted:
            choices.append(choice_study(bench, fitted["genre"], X_neg, lof))
        if seed == seeds[0]:
            reuse = dict(bench=bench, genre=fitted.get("genre"), X_neg=X_neg, lof=lof)
    results = summarise(dataset, n_test, seeds, benches, per_seed)
    gamma = GenReConfig().gamma
    shares = [dh_plus_validity(b, gamma) for b in benches]                  # one dict per seed
    results["dh_plus_valid"] = float(np.mean([s["all"] for s in shares]))
    results["dh_plus_valid_by_h"] = {band: float(np.mean([s[band] for s in shares])) for band in H_BANDS}
    if choices:
        results["choice"] = [{**rows[0], **{k: float(np.nanmean([row[k] for row in rows])) for k in CHOICE_METRICS}}
                             for rows in zip(*choices)]                      # mean over seeds, row by row
    return results, reuse


def seed_model(dataset: str, seed: int, n_test: int, cache: str) -> dict:
    """What the studies reuse, without the comparison: the seed's benchmark, its test
    negatives, the metric's LOF and the default GenRe (from the cache when trained)."""
    bench = prepare(dataset, seed, cache)
    return dict(bench=bench, genre=fit_genre(bench), X_neg=pick_test_negatives(bench, n_test),
                lof=fit_metric_lof(bench))


H_BANDS = {"h <= 0.8": (0.0, 0.8), "0.8 < h <= 0.9": (0.8, 0.9), "h > 0.9": (0.9, 1.0)}


def dh_plus_validity(bench, gamma: float) -> dict:
    """The share of GenRe's targets D_h^+ = {y = 1, h > gamma} that the oracle accepts:
    over all of D_h^+ ("all"), and within each band of h(x+) in H_BANDS (nan if empty).

    The labels are draws from the oracle's probabilities, so some rows labelled 1
    sit where the oracle says no; a recourse that copies such a target is invalid.
    This bounds the validity of anything that returns D_h^+ rows (NNR (D_h^+)).
    """
    ds = bench.ds
    p = bench.h.predict_proba(ds.X_train)                                    # (N,) h(x)
    pos = training_sets(ds.y_train, p, gamma)[1]                             # D_h^+, as dh_plus
    valid = oracle_proba(bench.oracle, ds.X_train[pos]) > 0.5                # (N+,)
    p = p[pos]                                                               # (N+,) all > gamma
    shares = {"all": float(valid.mean())}
    for band, (lo, hi) in H_BANDS.items():
        inside = (p > lo) & (p <= hi)
        shares[band] = float(valid[inside].mean()) if inside.any() else float("nan")
    return shares


# ----------------------------------------------------------------------------- 3. lambda study

def lambda_sweep(bench, genre_default, X_neg, lof, lambdas=LAMBDAS, with_cruds=True, vae_epochs=None) -> dict:
    """Figure 4: GenRe retrained for each lambda of Eq. 6, and CRUDS (its CSVAE trained once)
    searched with each lambda; seed of `bench`. Returns {"genre": rows, "cruds": rows}."""
    out = {"genre": [], **({"cruds": []} if with_cruds else {})}
    d = bench.ds.n_features
    for lam in lambdas:
        cfg = dataclasses.replace(genre_default.cfg_, lam=lam)
        runs = {"genre": genre_default if lam == genre_default.cfg_.lam else fit_genre(bench, cfg)}
        if with_cruds:
            cruds = make_method("cruds", bench.seed, cache_dir=bench.cache_dir, verbose=False, vae_epochs=vae_epochs)
            cruds.lam = lam                                       # its CSVAE does not depend on lambda: cached
            runs["cruds"] = fit_one(cruds, bench)
        for name, method in runs.items():
            r = metrics_of(X_neg, method.recourse(X_neg), bench.oracle, lof, bench.ds.immutable)
            out[name].append({"lam": lam, **r, "n_features": d})
            log(f"[{bench.ds.name}] {name} lambda {lam}: cost {r['cost']:.3f}  val {r['validity']:.3f}  "
                f"lof {r['lof']:.3f}  score {r['score']:.3f}")
    return out


def label_groups(x, y, lams, tol) -> list[tuple[float, float, list]]:
    """Points within tol = (dx, dy) of a group's first point join its label, so lambdas whose
    points coincide read "0.5, 1, 2.5" once instead of overprinting: [(x, y, lambdas)]."""
    groups = []
    for xi, yi, lam in zip(x, y, lams):
        near = next((g for g in groups if abs(g[0] - xi) <= tol[0] and abs(g[1] - yi) <= tol[1]), None)
        if near is None:
            groups.append((xi, yi, [lam]))
        else:
            near[2].append(lam)
    return groups


def plot_lambda(sweeps: dict, path: str) -> None:
    """Figure 4: -Cost/d on x against Validity (top row) and LOF (bottom row), one column a data
    set, one line per method; each point labelled with its lambda, labels staggered."""
    import matplotlib                     # here, not at the top: only the figures need matplotlib (slow to load)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colours = {"genre": "tab:blue", "cruds": "tab:orange"}
    fig, axes = plt.subplots(2, len(sweeps), figsize=(4.5 * len(sweeps), 7), squeeze=False)
    for col, (name, by_method) in enumerate(sweeps.items()):
        for row, (key, label) in enumerate((("validity", "Validity"), ("lof", "LOF inlier fraction"))):
            ax = axes[row, col]
            for i, (method, rows) in enumerate(by_method.items()):
                x = [-r["cost"] / r["n_features"] for r in rows]
                y = [r[key] for r in rows]
                ax.plot(x, y, "o-", color=colours.get(method), label="GenRe" if method == "genre" else "CRUDS")
                span = max(max(x) - min(x), 0.05)
                for j, (xi, yi, lams) in enumerate(label_groups(x, y, [r["lam"] for r in rows],
                                                                (0.06 * span, 0.06))):
                    dy = (10 if j % 2 else -14) * (1 if i == 0 else -1)   # alternate above/below, per method
                    ax.annotate(", ".join(f"{lam:g}" for lam in lams), (xi, yi), textcoords="offset points",
                                xytext=(3, dy), fontsize=7, color=colours.get(method))
            ax.set_ylim(-0.05, 1.1)
            ax.set_xlabel("-Cost / d")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"{name} (labels: λ)")
            if row == 0 and col == 0:
                ax.legend(loc="lower left", fontsize=8)
    fig.suptitle("GenRe and CRUDS across the balance parameter λ (seed 0, 200 test negatives)")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


# ----------------------------------------------------------------------------- 4. tau / sigma study

def tau_sigma(bench, genre, X_neg, lof) -> list[dict]:
    """Table 11: the same trained GenRe sampled with other temperatures and noise levels,
    otherwise as the paper sampled (the best of 10 by h)."""
    rows = []
    for tau in TAUS:
        for sigma in SIGMAS:
            X_plus = genre.recourse(X_neg, tau=tau, sigma=sigma, select="h")
            rows.append({"tau": tau, "sigma": sigma, "select": "h",
                         **metrics_of(X_neg, X_plus, bench.oracle, lof, bench.ds.immutable)})
    return rows


# ----------------------------------------------------------------------------- 5. where the Score comes from

CHOICE_METRICS = (*METRICS, "near_gamma", "near_gamma_valid")
NEAR_GAMMA = H_BANDS["h <= 0.8"][1]       # "near gamma": h(x+) <= 0.8, the first of H_BANDS


def choice_study(bench, genre, X_neg, lof) -> list[dict]:
    """Separate what GenRe's model contributes from what the choice among its samples does.

    Two samplers give n = 10 candidates per test negative x:
      "GenRe": the trained model's samples (Algorithm 2, GenRe's default sampling);
      "Q":     exact draws from the pairing distribution the model is trained to imitate,
               Q(x+ | x) ~ exp(-lambda C(x, x+)) over D_h^+ (Eq. 6, top K), i.e. a perfect model.
    Four ways to choose one of them: "one draw" (the first); "best of 10 by h" (Sec. 5.1);
    "best of 10 by h among plausible" (GenRe's select="plausible"); "best of 10 by the
    oracle" (the highest Val + LOF - Cost/d, a bound that peeks at the oracle and the LOF,
    which no method may do). Returns one row per (sampler, choice) with the protocol's
    metrics, plus near_gamma, the share of chosen candidates with h(x+) <= NEAR_GAMMA, and
    near_gamma_valid, their validity (nan if there are none).
    """
    ds, cfg = bench.ds, genre.cfg_
    M, D = X_neg.shape
    n = cfg.n_samples
    X_pos = ds.X_train[dh_plus(ds, bench.h, cfg.gamma)]                      # (N+, D)
    candidates = {"GenRe": genre.sample(X_neg),                              # (M, n, D)
                  "Q": draw_from_q(X_neg, X_pos, cfg.lam, ds.immutable, cfg.top_k, n,
                                   child_seed(bench.seed, "q draws"))}
    X_rep = np.repeat(X_neg, n, axis=0)                                       # (M*n, D), row i's n copies
    rows = []
    for sampler, S in candidates.items():
        flat = S.reshape(M * n, D)
        h = bench.h.predict_proba(flat).reshape(M, n)                         # (M, n)
        cost, valid, inlier = (a.reshape(M, n) for a in row_metrics(X_rep, flat, bench.oracle, lof))
        each = valid.astype(float) + inlier - cost / D                       # (M, n): each one's part of the Score
        plausible = genre.plausibility().predict(flat).reshape(M, n) == 1     # (M, n), the method's own LOF
        for choice, pick in (("one draw", np.zeros(M, int)), (f"best of {n} by h", h.argmax(1)),
                             (f"best of {n} by h among plausible", (h + plausible).argmax(1)),
                             (f"best of {n} by the oracle", each.argmax(1))):
            chosen = np.arange(M), pick
            near = h[chosen] <= NEAR_GAMMA                                    # (M,)
            rows.append({"sampler": sampler, "choice": choice,
                         **metrics_of_rows(cost[chosen], valid[chosen], inlier[chosen], D),
                         "near_gamma": float(near.mean()),
                         "near_gamma_valid": float(valid[chosen][near].mean()) if near.any() else float("nan")})
    return rows


def draw_from_q(X, X_pos, lam, immutable, top_k, n, seed) -> np.ndarray:
    """n exact draws per row of X (M, D) from Q(x+ | x) over the rows of X_pos (Eq. 6, top K),
    with genre.pairing_distribution -> (M, n, D). A row whose immutables no row of X_pos
    shares has no Q; it keeps x itself (invalid, at no cost)."""
    idx, prob, keep = pairing_distribution(torch.from_numpy(X), torch.from_numpy(X_pos), lam,
                                           torch.from_numpy(immutable), top_k)
    g = torch.Generator().manual_seed(seed)
    draws = idx.gather(1, torch.multinomial(prob, n, replacement=True, generator=g)).numpy()  # (M_keep, n)
    out = np.repeat(X[:, None], n, axis=1)                                   # (M, n, D)
    out[keep.numpy()] = X_pos[draws]
    return out


# ----------------------------------------------------------------------------- 6. Table 13: fractions

FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0)   # shares of the training rows GenRe is trained on
FRACTION_SEEDS = (0, 1, 2)        # a study of one data set, not the comparison: three seeds


def fraction_study(name: str, seeds, n_test: int, cache: str) -> dict:
    """App. D.5, Table 13: GenRe (both rows, one trained model) trained on a uniform share of
    the training rows, drawn with its own stream of the seed; h, the test negatives and the
    metric stay the seed's. {fraction: {"n_train", "fit_seconds", row: metrics dicts, per seed}}."""
    out = {str(f): {"n_train": [], "fit_seconds": [], **{row: [] for row in GENRE_ROWS}} for f in FRACTIONS}
    for seed in seeds:
        bench = prepare(name, seed, cache)
        X_neg, lof = pick_test_negatives(bench, n_test), fit_metric_lof(bench)
        ds = bench.ds
        for f in FRACTIONS:
            rng = np.random.default_rng(child_seed(seed, f"fraction {f}"))
            rows = np.sort(rng.choice(len(ds.y_train), int(round(f * len(ds.y_train))), replace=False))
            part = dataclasses.replace(bench, ds=dataclasses.replace(ds, X_train=ds.X_train[rows], y_train=ds.y_train[rows]))
            memo = {}
            for row, preset in GENRE_ROWS.items():
                genre = fit_genre(part, preset(), verbose=False, memo=memo)
                out[str(f)][row].append(metrics_of(X_neg, genre.recourse(X_neg), bench.oracle, lof, ds.immutable))
            out[str(f)]["n_train"].append(len(rows))
            out[str(f)]["fit_seconds"].append(genre.fit_seconds_)
            log(f"[{name} seed {seed}] fraction {f}: genre score {out[str(f)]['genre'][-1]['score']:.3f} "
                f"({genre.fit_seconds_:.0f}s)")
    return out


def plot_fractions(studies: dict, path: str) -> None:
    """Table 13's figure: Score (left) and training seconds (right) against the share of the
    training rows, mean over seeds; one line per GenRe row."""
    import matplotlib                     # here, not at the top: only the figures need matplotlib (slow to load)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    (name, study), = studies.items()
    shares = [float(f) for f in study]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for row in GENRE_ROWS:
        left.plot(shares, [np.mean([r["score"] for r in study[f][row]]) for f in study], "o-", label=row)
    right.plot(shares, [np.mean(study[f]["fit_seconds"]) for f in study], "o-", color="tab:gray")
    for ax, label in ((left, "Score (mean over seeds)"), (right, "training seconds (pairing + Algorithm 1)")):
        ax.set_xscale("log")
        ax.set_xticks(shares, [f"{s:g}" for s in shares])
        ax.set_xlabel(f"share of {name}'s training rows")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle(f"GenRe on fractions of {name}'s training data (Table 13)")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)


# ----------------------------------------------------------------------------- 7. Table 4: diffusion

DIFFUSION_ROWS = ["genre", *DIFFUSION]      # GenRe beside them, on the same seeds and negatives


# ----------------------------------------------------------------------------- 8. the constrained study


def constrained_study(name: str, seeds, n_test: int, cache: str, vae_epochs=None) -> dict:
    """Every method in its designed mode with ADULT_RULES given at fit (a lender's rules), the
    search baselines as the paper's runner ran them given the same (they ignore them), GenRe
    given them only at recourse time (no retraining), and each method without the rules:
    {"rules": ..., "with": results, "at_recourse": results, "without": results}."""
    designed = [*GENRE_ROWS, *POST_STEPS, *PAPER_ROWS, *NNR_ROWS]
    # The generative baselines' paper modes ignore the rules like every paper mode and search
    # longest (cchvae_paper's shells on adult): their numbers are their Table 2 rows, left out here.
    paper = [row for m, row in PAPER_ROWS.items() if m not in GENERATIVE]
    rules = load(name).constraints(**ADULT_RULES)
    runs = {}
    for key, methods, given_at in (("with", designed + paper, "fit"),
                                   ("at_recourse", list(GENRE_ROWS), "recourse"),
                                   ("without", designed, "count")):       # not given, their breaks counted
        benches, per_seed = [], []
        for seed in seeds:
            bench = dataclasses.replace(prepare(name, seed, cache), constraints=rules, constraints_at=given_at)
            per_seed.append(run_seed(bench, methods, n_test, vae_epochs=vae_epochs)[0])
            benches.append(bench)
        runs[key] = summarise(name, n_test, seeds, benches, per_seed)
    return {"rules": ADULT_RULES, **runs}


# ----------------------------------------------------------------------------- command line

def write(out: str, fname: str, data: dict) -> None:
    """<out>/<fname>, written whole, with the versions and commit it was computed with."""
    data = {**data, "provenance": provenance()}
    atomic_write(os.path.join(out, fname), lambda f: f.write(json.dumps(data, indent=2).encode()))


STAGES = ("development", "ablation", "comparison", "generative", "lambda", "tau_sigma", "diffusion",
          "fractions", "constrained", "gaps")
LONGEST_FIRST = ("generative", "constrained", "ablation", "comparison", "diffusion", "fractions", "gaps",
                 "development")
STUDY_DATA = {"fractions": "adult", "constrained": "adult"}     # the studies of one data set
GAPS_SEEDS = (0,)                                                # gaps.py's studies: the seed of its notes


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Reproduce the paper's tables and figures (development "
                                            "study, comparison, lambda, tau/sigma) into results/ and figures/.")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4],
                   help="seeds of the comparison and its studies (default 0-4)")
    p.add_argument("--methods", nargs="+", default=list(TABLE2),
                   help="methods of the comparison (default: all of Table 2's)")
    p.add_argument("--generative-seeds", nargs="+", type=int,
                   help="seeds of the generative stage (CCHVAE, REVISE, CRUDS), into "
                        "results/<dataset>_generative.json (default: --seeds)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="units run side by side, one core each (default: 2, or 1 on one core)")
    p.add_argument("--only", nargs="+", choices=STAGES,
                   help="run only these stages (fractions and constrained run on adult, gaps on all three data "
                        "sets, generative on --methods' CCHVAE, REVISE, CRUDS: a stage with nothing to run is "
                        "skipped with a warning, and refused if nothing else was asked)")
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--vae-epochs", type=int, help="CCHVAE, REVISE, CRUDS: VAE epochs (default 20, the runner's)")
    p.add_argument("--out", help="folder for the JSON files and README.md (default results/, "
                                  "or runs/quick/ with --quick; the project's folders, wherever it runs from)")
    p.add_argument("--figures", default=os.path.join(HERE, "figures"), help="folder for lambda_sweep.png "
                                                                             "(default the project's figures/)")
    p.add_argument("--cache", default=CACHE_DIR, help="folder for cached oracle, h and fitted models "
                                                      "(default the project's cache/)")
    p.add_argument("--quick", action="store_true",
                   help=f"a preview: one seed, lambdas {{1, 5, 10}}, {QUICK_N_TEST} test negatives, VAEs "
                        f"{QUICK_VAE_EPOCHS} epochs, into runs/quick/ and its figures/ (or --out)")
    p.add_argument("--report-only", action="store_true",
                   help="only re-render results/README.md and README.md's tables from the result files; "
                        "with --out DIR, DIR/README.md from DIR's result files")
    args = p.parse_args(argv)
    if args.quick:                                                # a preview of every stage, not the published run
        args.seeds, args.n_test, args.vae_epochs = [0], QUICK_N_TEST, args.vae_epochs or QUICK_VAE_EPOCHS
        args.out = args.out or os.path.join(HERE, "runs", "quick")
        args.figures = os.path.join(args.out, "figures")
    args.out = args.out or PUBLISHED
    args.generative_seeds = args.generative_seeds or args.seeds
    named, args.only = args.only or [], args.only or list(STAGES)
    if args.jobs < 1:
        p.error(f"--jobs must be at least 1, got {args.jobs}")
    for flag, seeds in (("--seeds", args.seeds), ("--generative-seeds", args.generative_seeds)):
        if min(seeds) < 0:
            p.error(f"{flag} must be 0 or more, got {min(seeds)}")
        if len(set(seeds)) != len(seeds):                        # a repeat would publish a std of 0
            p.error(f"{flag} names a seed twice: {seeds}")
    idle = [idle_stage(stage, args) for stage in named if idle_stage(stage, args) and not args.report_only]
    if idle and len(idle) == len(named):                          # nothing asked for would run
        p.error(idle[0])
    for reason in idle:                                           # the other stages run
        print(f"warning: {reason}; skipped", file=sys.stderr)
    if args.n_test < 1:
        p.error(f"--n-test must be at least 1, got {args.n_test}")
    if args.vae_epochs is not None and args.vae_epochs < 1:
        p.error(f"--vae-epochs must be at least 1, got {args.vae_epochs}")
    try:
        check_methods(args.methods)
    except ValueError as e:
        p.error(str(e))                                           # one line and exit 2, argparse's way
    return args


def idle_stage(stage: str, args) -> str | None:
    """Why a stage named in --only would run no unit with these flags (plan()), or None."""
    if stage in STUDY_DATA and STUDY_DATA[stage] not in args.datasets:
        return f"--only {stage} runs on {STUDY_DATA[stage]} only; add {STUDY_DATA[stage]} to --datasets"
    if stage == "gaps" and set(args.datasets) != set(DATASETS):
        return (f"--only gaps runs gaps.py's studies, which use {', '.join(DATASETS)} together; give all three "
                f"to --datasets (the default)")
    if stage == "generative" and not set(GENERATIVE) & set(args.methods):
        return f"--only generative runs {', '.join(GENERATIVE)}; --methods names none of them"
    return None


def check_folders(args) -> None:
    """Every folder the run writes must take files, found now rather than after hours of work."""
    folders = [("--out", args.out)] + ([] if args.report_only else [("--figures", args.figures),
                                                                      ("--cache", args.cache)])
    for flag, folder in folders:
        check_folder(folder, flag)


def main(argv=None) -> int:
    """The command line (common.command_line: bad input is one line and exit code 2)."""
    return command_line(run_command, argv)


def run_command(argv=None) -> int:
    args = parse_args(argv)
    check_folders(args)                                           # before hours of work
    if not args.report_only:
        run(args)
    if os.path.realpath(args.out) == os.path.realpath(PUBLISHED):
        report.publish_results(args.out)
    elif args.report_only:
        report_folder(args.out)
    return 0


# The files report.results_readme renders (timing.json alone has nothing to report).
REPORTED = (*[f"{n}{part}.json" for n in DATASETS for part in ("", "_generative")],
            *[f"{s}.json" for s in ("development", "ablation", "diffusion", "fractions", "constrained",
                                    "lambda_sweep", "tau_sigma", "gaps")])


def report_folder(folder: str) -> None:
    """--report-only --out DIR: DIR/README.md from DIR's result files (README.md's tables keep
    the published numbers), or a one-line error if DIR holds none."""
    if not any(os.path.exists(os.path.join(folder, f)) for f in REPORTED):
        raise ValueError(f"--report-only: {folder} holds no result files to report ({', '.join(REPORTED[:3])}, "
                         f"...); run `python experiments.py --out {folder}` first")
    text = report.results_readme(folder)
    path = os.path.join(folder, "README.md")
    atomic_write(path, lambda f: f.write(text.encode()))
    print(f"written: {path} (README.md's tables show results/ and are left as they are)")


# ----------------------------------------------------------------------------- the run, in units

def plan(args) -> list[tuple[str, str]]:
    """The run as independent units (stage, data set), roughly longest first so that --jobs
    workers finish together. Units share only the cache folder (each cached file is written
    whole), so any order gives the same numbers."""
    generative = [m for m in args.methods if m in GENERATIVE]
    per_dataset = [("generative", bool(generative)), ("ablation", True), ("comparison", True),
                   ("diffusion", True), ("development", True)]
    units = []
    for stage, wanted in per_dataset:
        runs = stage in args.only or (stage == "comparison" and {"lambda", "tau_sigma"} & set(args.only))
        units += [(stage, name) for name in args.datasets if wanted and runs]
    units += [(stage, name) for stage, name in STUDY_DATA.items() if stage in args.only and name in args.datasets]
    units += [("gaps", "all")] if "gaps" in args.only and set(args.datasets) == set(DATASETS) else []
    first = {"adult": 0, "heloc": 1, "compas": 2, "all": 1}              # adult's units take longest
    return sorted(units, key=lambda u: (first[u[1]], LONGEST_FIRST.index(u[0])))


def run_unit(unit: tuple[str, str], args) -> dict:
    """One unit of the run; returns what its files need, and its wall-clock minutes."""
    t0, (stage, name) = time.time(), unit
    if stage == "development":
        out = {"scores": development_scores(name, args.dev_seeds, args.n_test, args.cache)}
    elif stage == "ablation":
        out = {"scores": ablation.ablation_scores(name, args.dev_seeds_ablation, args.n_test, args.cache, log=log)}
    elif stage == "generative":
        out = {"results": comparison(name, args.generative_seeds, [m for m in args.methods if m in GENERATIVE],
                                     args.n_test, args.cache, vae_epochs=args.vae_epochs)[0]}
    elif stage == "diffusion":
        out = {"results": comparison(name, args.seeds, DIFFUSION_ROWS, args.n_test, args.cache)[0]}
    elif stage == "fractions":
        out = {"fractions": fraction_study(name, args.fraction_seeds, args.n_test, args.cache)}
    elif stage == "constrained":
        out = {"constrained": constrained_study(name, args.seeds, args.n_test, args.cache, args.vae_epochs)}
    elif stage == "gaps":                                               # gaps.py's studies, every data set
        out = {"gaps": gaps.run_studies(list(gaps.STUDIES), GAPS_SEEDS, args.cache, args.n_test, log=log)}
    else:
        out = comparison_and_studies(name, args)
    log(f"[{name}] {stage} done")
    return {**out, "minutes": (time.time() - t0) / 60}


def comparison_and_studies(name: str, args) -> dict:
    """Table 2 for the methods that are not generative, then the lambda and tau/sigma studies,
    which reuse its seed-0 GenRe."""
    out, main_methods = {}, [m for m in args.methods if m not in GENERATIVE]
    if "comparison" in args.only:
        out["results"], reuse = comparison(name, args.seeds, main_methods, args.n_test, args.cache)
    else:
        reuse = seed_model(name, args.seeds[0], args.n_test, args.cache)
    if "tau_sigma" in args.only:
        out["tau_sigma"] = tau_sigma(**reuse)
    if "lambda" in args.only:
        out["lambda"] = lambda_sweep(reuse["bench"], reuse["genre"], reuse["X_neg"], reuse["lof"], args.lambdas,
                                     with_cruds="cruds" in args.methods, vae_epochs=args.vae_epochs)
    return out


def guarded_unit(unit, args) -> dict:
    """run_unit, a failure returned as {"error": the traceback} so the other units go on."""
    try:
        return run_unit(unit, args)
    except Exception:                                                   # noqa: BLE001 (reported by run())
        return {"error": traceback.format_exc(), "minutes": 0.0}


def run_all(units, args):
    """Yield (unit, output) as units finish: in this process for --jobs 1, else in worker processes."""
    if args.jobs == 1:
        for unit in units:
            yield unit, guarded_unit(unit, args)
        return
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=spawn, initializer=torch.set_num_threads,
                                                initargs=(1,)) as pool:               # one core each
        futures = {pool.submit(guarded_unit, unit, args): unit for unit in units}
        for done in concurrent.futures.as_completed(futures):
            yield futures[done], done.result()


def run(args) -> None:
    """Run the chosen stages and write their JSON files: each file written whole again as soon
    as a unit adds to it, so a unit that fails loses only its own part (the failures are
    listed at the end, and the command fails). Each unit's minutes and the whole run's go to
    <out>/timing.json."""
    args.lambdas = (1.0, 5.0, 10.0) if args.quick else LAMBDAS
    args.dev_seeds = DEV_SEEDS[:1] if args.quick else DEV_SEEDS
    args.dev_seeds_ablation = ablation.SEEDS[:1] if args.quick else ablation.SEEDS
    args.fraction_seeds = args.seeds[:1] if args.quick else FRACTION_SEEDS
    command = "python experiments.py " + " ".join(sys.argv[1:])
    t0, timing, collected, failed = time.time(), {}, {}, []
    units = plan(args)
    log(f"{len(units)} units on {args.jobs} worker(s): " + ", ".join(f"{s} {n}" for s, n in units))
    for done, ((stage, name), out) in enumerate(run_all(units, args), 1):
        if "error" in out:
            failed.append(f"{stage} {name}")
            log(f"[{name}] {stage} FAILED:\n{out['error']}")
            continue
        timing[f"{stage} {name}"] = {"minutes": out["minutes"], "command": command}
        if stage == "generative":
            write(args.out, f"{name}_generative.json", out["results"])
        elif stage == "comparison":
            if "results" in out:
                write_json(out["results"], args.out, published_ok=True)
            for key in ("tau_sigma", "lambda"):
                if key in out:
                    collected.setdefault(key, {})[name] = out[key]
        else:
            collected.setdefault(stage, {})[name] = next(v for k, v in out.items() if k != "minutes")
        write_collected(args, collected, stage)
        log(f"{done} of {len(units)} units done, {(time.time() - t0) / 60:.0f} minutes so far")
    path = os.path.join(args.out, "timing.json")
    whole = set(args.only) == set(STAGES) and set(args.datasets) == set(DATASETS) and not failed
    key = "run" if whole else "run: --only " + " ".join(args.only)      # "run" is the whole run's alone
    timing[key] = {"minutes": (time.time() - t0) / 60, "command": command, "jobs": args.jobs}
    old = report.load_json(path) if os.path.exists(path) and not whole else {}
    write(args.out, "timing.json", {**old, **timing})
    log(f"run done in {timing[key]['minutes']:.1f} minutes")
    if failed:
        raise ValueError(f"{len(failed)} unit(s) failed: {', '.join(failed)} (their tracebacks are above)")


def write_collected(args, collected: dict, stage: str) -> None:
    """The files of a stage that gathers units (or of the comparison's studies), from the
    units done so far, in the data sets' order."""
    in_order = lambda d: {n: d[n] for n in [*args.datasets, "all"] if n in d}
    if stage == "development":
        dev = rank_candidates(in_order(collected["development"]), args.dev_seeds, args.n_test)
        write(args.out, "development.json", dev)
    elif stage == "ablation":
        write(args.out, "ablation.json", {"seeds": list(args.dev_seeds_ablation), "n_test": args.n_test,
                                          **ablation.variant_rows(in_order(collected["ablation"]))})
    elif stage == "gaps":
        write(args.out, "gaps.json", collected["gaps"]["all"])
    elif stage in ("diffusion", "fractions", "constrained"):
        write(args.out, f"{stage}.json", in_order(collected[stage]))
        if stage == "fractions":
            plot_fractions(collected["fractions"], os.path.join(args.figures, "fractions.png"))
    elif stage == "comparison":
        if "tau_sigma" in collected:
            write(args.out, "tau_sigma.json", in_order(collected["tau_sigma"]))
        if "lambda" in collected:
            write(args.out, "lambda_sweep.json", in_order(collected["lambda"]))
            plot_lambda(in_order(collected["lambda"]), os.path.join(args.figures, "lambda_sweep.png"))


if __name__ == "__main__":
    sys.exit(main())
