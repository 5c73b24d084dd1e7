"""Table 4's diffusion methods measured: the development split of each seed (--compare) or
the test protocol (--test), one row per data set, seed, space and method, then the means
over seeds beside the paper's Table 4.

    python diffusion_study.py --compare                           # both spaces, dev seeds 0 and 1
    python diffusion_study.py --compare --spaces features --set n_samples=1 svdd_churn=20
    python diffusion_study.py --test --data compas --seeds 0 1 2

The methods are diffusion.py's (DiffusionQ, DiffusionSVDD, named by DIFFUSION_METHODS);
the benchmark is evaluate.py's (oracle, drawn labels, h, the metric's LOF). What these
measurements chose is written in diffusion.py's docstring. It writes nothing but the
model cache.
"""
from __future__ import annotations

import argparse
import time
import typing

import numpy as np

from diffusion import DIFFUSION_METHODS, DiffusionConfig
from evaluate import development, fit_metric_lof, metrics_of, pick_test_negatives, prepare, read_value
from tables import PAPER_TABLE4


def run_one(name: str, bench, X_neg, lof, cfg: DiffusionConfig, seed: int, cache_dir) -> dict:
    """Fit one method on the benchmark's train split, give recourse to X_neg, score it."""
    ds = bench.ds
    method = DIFFUSION_METHODS[name](random_state=seed, cache_dir=cache_dir, cfg=cfg)
    t0 = time.time()
    method.fit(ds.X_train, ds.y_train, bench.h, immutable=ds.immutable, categorical=ds.categorical,
               groups=ds.groups)
    t1 = time.time()
    X_plus = method.recourse(X_neg)
    t2 = time.time()
    return {**metrics_of(X_neg, X_plus, bench.oracle, lof, ds.immutable), "failed": method.n_failed_,
            "train_s": method.train_seconds_, "fit_s": t1 - t0, "recourse_s": t2 - t1}


def print_row(label: str, r: dict, paper=None) -> None:
    """One line of the table: the metrics, failures, and seconds (train_s: the model's training,
    also when it came from the cache; fit_s: this fit, a cache load plus +Q's D_syn^+ draw)."""
    cells = f"{r['cost']:6.3f} {r['validity']:5.3f} {r['lof']:5.3f} {r['score']:6.3f} {r['immutable_violations']:5.1f} " \
            f"{r['failed']:6.1f} {r['train_s']:7.1f} {r['fit_s']:7.1f} {r['recourse_s']:7.1f}"
    tail = "" if paper is None else "   paper " + " / ".join(f"{v:.2f}" for v in paper)
    print(f"{label:44s} {cells}{tail}", flush=True)


def measure(data, seeds, spaces, methods, n_test: int, cache_dir, test: bool, overrides=None) -> dict:
    """Every method on every data set, seed and space: the development split (test=False)
    or the test protocol (test=True). Prints one row each, then the means over seeds."""
    header = f"{'data seed space method':44s} {'cost':>6s} {'val':>5s} {'lof':>5s} {'score':>6s} {'viol':>5s} " \
             f"{'failed':>6s} {'train_s':>7s} {'fit_s':>7s} {'rec_s':>7s}"
    print(header, flush=True)
    results = {}
    for name in data:
        for seed in seeds:
            bench = (prepare if test else development)(name, seed, cache_dir, verbose=False)
            X_neg, lof = pick_test_negatives(bench, n_test), fit_metric_lof(bench)
            for space in spaces:
                cfg = DiffusionConfig(**{**(overrides or {}), "space": space})
                for m in methods:
                    r = run_one(m, bench, X_neg, lof, cfg, seed, cache_dir)
                    results[name, seed, space, m] = r
                    print_row(f"{name} {seed} {space} {m}", r)
    print("\nmeans over seeds " + str(list(seeds)) + (" (test protocol)" if test else " (development split)"))
    print(header, flush=True)
    for name in data:
        for space in spaces:
            for m in methods:
                rows = [results[name, s, space, m] for s in seeds]
                mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
                print_row(f"{name} {space} {m}", mean, PAPER_TABLE4.get(m, {}).get(name))
    return results


def config_overrides(pairs) -> dict:
    """["n_samples=1", "svdd_churn=20"] -> {"n_samples": 1, "svdd_churn": 20.0}, each value read
    as its DiffusionConfig field's type."""
    fields = typing.get_type_hints(DiffusionConfig)
    out = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set takes FIELD=VALUE with a DiffusionConfig field ({', '.join(fields)}), "
                             f"got {pair!r}")
        out[name] = read_value(name, text, fields[name])
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Table 4's diffusion baselines: measure them on the development "
                                            "split (--compare) or the test protocol (--test). Writes nothing "
                                            "but the model cache.")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--compare", action="store_true",
                      help="development split of each seed (never the test rows), both spaces by default")
    mode.add_argument("--test", action="store_true", help="the test protocol (evaluate.prepare), as evaluate.py")
    p.add_argument("--data", nargs="+", default=["adult", "compas", "heloc"], help="data sets")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="benchmark seeds")
    p.add_argument("--spaces", nargs="+", default=None, choices=("latent", "features"),
                   help="the diffusion's space (default: both for --compare, the config's for --test)")
    p.add_argument("--methods", nargs="+", default=list(DIFFUSION_METHODS), choices=list(DIFFUSION_METHODS),
                   help="methods to run")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE", dest="overrides",
                   help="any DiffusionConfig field, e.g. --set n_samples=1 svdd_churn=20")
    p.add_argument("--n-test", type=int, default=200, help="negatives given recourse per seed")
    p.add_argument("--cache", default="cache", help="folder of cached oracles, h and diffusion models")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    spaces = args.spaces or (["latent", "features"] if args.compare else [DiffusionConfig().space])
    measure(args.data, args.seeds, spaces, args.methods, args.n_test, args.cache, args.test,
            config_overrides(args.overrides))
