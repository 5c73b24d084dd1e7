"""Why some `NAME_paper` rows differ from the paper's Table 2: one small study per method.

    python gaps.py                                  # every study, seed 0, JSON to runs/gaps/
    python gaps.py --only probe tap --seeds 0 1     # some studies, more seeds

Each study reruns one baseline on the benchmark protocol (evaluate.py: oracle, drawn
labels, h, 200 test negatives, LOF) with one thing changed at a time: a behaviour of the
fork the paper's runner called (MartinPawel/ProbabilisticallyRobustRecourse, cited by
file and function in baselines.py and generative.py), a behaviour our modes keep on
purpose (immutables held, categoricals projected), or a setting of the runner. Every
study returns a JSON-able dict: what was varied, one row per (data set, seed, variant)
with Cost, Val, LOF and Score, and the counts that show the cause (columns named in
`counts`). `gaps_section(data)` renders the whole file as markdown.

Two behaviours recur. The fork returns its search point unprojected (categoricals not
rounded) and lets immutables move; a variant "unprojected" scores `x_raw_`, the point
before our projection, and "immutables free" fits the method with no immutable feature.
CARLA turns a recourse that h rejects into NaN, and how the paper scored those rows is
unknown; "rows h accepts" scores only the others, the other end of the bracket.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

import evaluate
from common import atomic_write, provenance, torch_threads
from tables import METRICS, PAPER, table

N_TEST = 200      # test negatives per seed, as evaluate.py


# ----------------------------------------------------------------------------- shared parts

class Case:
    """One data set and seed of the benchmark: the Benchmark, its test negatives and its LOF,
    prepared once and shared by every study of a run."""

    _cache: dict = {}

    def __init__(self, data: str, seed: int, cache_dir: str, n_test: int):
        key = (data, seed, cache_dir, n_test)
        if key not in Case._cache:
            bench = evaluate.prepare(data, seed, cache_dir, verbose=False)
            Case._cache[key] = (bench, evaluate.pick_test_negatives(bench, n_test), evaluate.fit_metric_lof(bench))
        self.bench, self.X_neg, self.lof = Case._cache[key]
        self.data, self.seed = data, seed


def fit_variant(name: str, s: Case, free_immutables: bool = False, train_on: str = "train", **params):
    """`name` ('probe_paper', 'tap', ...) as evaluate.make_method builds it, its attributes
    overridden by params, fitted on the train split (or, train_on="test", on the test
    split: the runner's glue hands CARLA's generative models the test split) with the data
    set's roles (free_immutables: none is immutable, as the fork treats them)."""
    method = evaluate.make_method(name, s.seed, cache_dir=s.bench.cache_dir, verbose=False)
    for key, value in params.items():
        if not hasattr(method, key):
            raise ValueError(f"{type(method).__name__} has no setting {key!r}")
        setattr(method, key, value)
    ds = s.bench.ds
    if train_on not in ("train", "test"):
        raise ValueError(f"train_on must be 'train' or 'test', got {train_on!r}")
    X, y = (ds.X_train, ds.y_train) if train_on == "train" else (ds.X_test, ds.y_test)
    with torch_threads(1):
        method.fit(X, y, s.bench.h, immutable=None if free_immutables else ds.immutable,
                   categorical=ds.categorical, groups=ds.groups)
    return method


def recourse(method, s: Case) -> np.ndarray:
    with torch_threads(1):
        return method.recourse(s.X_neg)


def row(s: Case, variant: str, X_plus, rows=None, **counts) -> dict:
    """Cost, Val, LOF, Score of X_plus (optionally only `rows`, a (M,) bool mask), the share
    h accepts, immutable violations, and the study's own counts."""
    X_plus = np.asarray(X_plus, dtype=np.float32)
    X, mask = s.X_neg, np.ones(len(s.X_neg), bool) if rows is None else np.asarray(rows)
    out = {"data": s.data, "seed": s.seed, "variant": variant, "n": int(mask.sum())}
    if mask.any():
        sc = evaluate.metrics_of(X[mask], X_plus[mask], s.bench.oracle, s.lof, s.bench.ds.immutable)
        out.update({k: float(sc[k]) for k in METRICS}, immutable_violations=sc["immutable_violations"])
    else:
        out.update({k: None for k in METRICS}, immutable_violations=0)
    out["h_valid"] = float((s.bench.h.predict_proba(X_plus[mask]) > 0.5).mean()) if mask.any() else None
    return {**out, **{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in counts.items()}}


def h_accepts(s: Case, X_plus) -> np.ndarray:
    """(M,) bool: h(x+) > 0.5, the rows the fork does not turn into NaN."""
    return s.bench.h.predict_proba(np.asarray(X_plus, dtype=np.float32)) > 0.5


def cases(datasets, seeds, cache_dir, n_test):
    """Every (data set, seed) as a Case, data set by data set."""
    return [Case(d, seed, cache_dir, n_test) for d in datasets for seed in seeds]


def study(name: str, question: str, varied: str, counts: dict, rows: list, datasets, **extra) -> dict:
    return {"study": name, "question": question, "varied": varied, "counts": counts,
            "paper": {d: PAPER[name][d] for d in datasets if d in PAPER.get(name, {})},
            "rows": rows, **extra}


# ----------------------------------------------------------------------------- PROBE

def fork_round_seconds(s: Case, n_steps: int = 40) -> float:
    """Seconds one 200-step round of the fork's per-row PROBE loop takes on this machine
    (wachter_rip_recourse: one row, a two-column probability output, the closed-form
    invalidation rate with double backprop, BCE, L1 distance, an amsgrad step, then a
    10^4-sample Monte Carlo rate each step), timed over n_steps steps. The fork runs rounds
    until 30 s have passed, so 30 / this is about how many rounds a row gets."""
    h = s.bench.h
    x0 = torch.as_tensor(s.X_neg[:1])
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=1e-3, amsgrad=True)
    d = x.shape[1]
    mvn = lambda: torch.distributions.MultivariateNormal(torch.zeros(d), torch.eye(d))

    def two_columns(z):                                          # the runner's CarlaWrap
        p = torch.sigmoid(h(z))
        return torch.stack([1 - p, p], dim=1)

    def step():
        prob = two_columns(x)
        logit = torch.log(prob[0, 1] / prob[0, 0])
        grad, = torch.autograd.grad(logit, x, create_graph=True)
        ir = 1 - torch.distributions.Normal(0.0, 1.0).cdf(logit / (0.1 * grad.norm()))
        loss = 3 * torch.relu(ir - 0.05) + torch.nn.functional.binary_cross_entropy(
            prob[0], torch.tensor([0.45, 0.55])) + 0.01 * torch.dist(x, x0, 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            (two_columns(x + 0.1 * mvn().sample((10_000,)))[:, 1] > 0.5).float().mean()

    with torch_threads(1), torch.random.fork_rng():              # the global stream is left as it was
        step()                                                   # warm-up
        t0 = time.perf_counter()
        for _ in range(n_steps):
            step()
        return 200 * (time.perf_counter() - t0) / n_steps


def probe_study(seeds=(0,), cache_dir="cache", n_test=N_TEST, datasets=("adult", "compas")) -> dict:
    """PROBE: the fork's BCE target (0.55, not 1), its unprojected return, its free immutables,
    and the round cap that stands for its 30 s timer."""
    rows, timer = [], {}
    for s in cases(datasets, seeds, cache_dir, n_test):
        def counted(variant, method, X_plus, rows_=None):
            r = method.rounds_.numpy()
            return row(s, variant, X_plus, rows_, failed=method.n_failed_, mean_rounds=float(r.mean()),
                       max_rounds=int(r.max()), negative_lam=int((r >= 2).sum()))
        before = fit_variant("probe_paper", s, fork_y_target=1.0)
        rows.append(counted("BCE target 1 (as designed)", before, recourse(before, s)))
        fork = fit_variant("probe_paper", s)
        X_plus = recourse(fork, s)
        rows.append(counted("BCE target 0.55 (probe_paper)", fork, X_plus))
        rows.append(counted("target 0.55, unprojected", fork, fork.x_raw_))
        free = fit_variant("probe_paper", s, free_immutables=True)
        recourse(free, s)
        rows.append(counted("target 0.55, unprojected, immutables free", free, free.x_raw_))
        longer = fit_variant("probe_paper", s, n_rounds=40)
        recourse(longer, s)
        rows.append(counted("target 0.55, unprojected, 40 rounds", longer, longer.x_raw_))
        timer[s.data] = fork_round_seconds(s)
    return study("probe", "Why is probe_paper's cost far below the paper's 33.91 (adult) and 5.77 (compas)?",
                 "the BCE target of h(x+), what is returned, immutables, the round cap",
                 {"failed": "rows missing PROBE's test (h > 0.5 and Monte Carlo IR < r + eps)",
                  "mean_rounds": "rounds a row ran (mean)", "max_rounds": "rounds a row ran (max)",
                  "negative_lam": "rows that ran a round with lam < 0 (2 or more rounds)"},
                 rows, datasets, round_seconds=timer,
                 round_seconds_note="seconds per 200-step round of the fork's per-row loop on this "
                                    "machine (fork_round_seconds); 30 s / it = rounds the fork's timer allows")


# ----------------------------------------------------------------------------- TAP

def tap_study(seeds=(0,), cache_dir="cache", n_test=N_TEST, datasets=("adult", "compas")) -> dict:
    """TAP: the target probability p_t, which iterate is returned (the cheapest valid one, or
    the last one as the TAP code's suggest_AP returns it), the number of halvings of lam,
    and lam = 0 (the TAP code's adult example sets initial_balance_param = 0)."""
    rows = []
    variants = [("p_t 0.5, cheapest valid iterate (tap)", "tap", {}),
                ("p_t 0.5, cheapest valid iterate, 12 halvings", "tap", {"n_rounds": 12}),
                ("p_t 0.5, last iterate", "tap_paper", {"paper_p_t": 0.5}),
                ("p_t 0.9, cheapest valid iterate", "tap", {"p_t": 0.9}),
                ("p_t 0.9, last iterate (tap_paper)", "tap_paper", {}),
                ("p_t 0.9, last iterate, lam 0 (the TAP notebook's balance)", "tap_paper",
                 {"lam": 0.0, "n_rounds": 1})]
    for s in cases(datasets, seeds, cache_dir, n_test):
        for label, name, params in variants:
            method = fit_variant(name, s, **params)
            X_plus = recourse(method, s)
            rows.append(row(s, label, X_plus, failed=method.n_failed_,
                            mean_h=float(s.bench.h.predict_proba(X_plus).mean())))
    return study("tap", "Why is tap's validity far below the paper's 0.99 (adult) and 0.88 (compas)?",
                 "the target probability p_t, the iterate returned, the halvings of lam, lam itself",
                 {"failed": "rows missing TAP's test (h > 0.5 and verifier >= 0.5)",
                  "mean_h": "mean h(x+) of the returned recourses"}, rows, datasets)


# ----------------------------------------------------------------------------- ROAR

def roar_study(seeds=(0,), cache_dir="cache", n_test=N_TEST, datasets=("adult", "compas")) -> dict:
    """ROAR: the fork returns its search point unprojected, lets immutables move, and turns
    the rows h rejects into NaN; the step cap that stands for its unbounded loop."""
    rows = []
    for s in cases(datasets, seeds, cache_dir, n_test):
        held = fit_variant("roar_paper", s)
        X_plus = recourse(held, s)
        rows.append(row(s, "roar_paper", X_plus, failed=held.n_failed_))
        rows.append(row(s, "unprojected", held.x_raw_, failed=held.n_failed_))
        free = fit_variant("roar_paper", s, free_immutables=True)
        recourse(free, s)
        raw = free.x_raw_.numpy()
        rows.append(row(s, "unprojected, immutables free (the fork)", raw, failed=free.n_failed_))
        rows.append(row(s, "the fork, rows h accepts", raw, h_accepts(s, raw), failed=free.n_failed_))
        uncapped = fit_variant("roar_paper", s, n_iter=20_000)
        rows.append(row(s, "roar_paper, step cap 20000", recourse(uncapped, s), failed=uncapped.n_failed_))
    return study("roar", "Why is roar_paper's cost below the paper's 10.17 (adult) and 4.01 (compas)?",
                 "what is returned, immutables, the NaN rows, the step cap",
                 {"failed": "rows h rejects (NaN in the fork)"}, rows, datasets)


# ----------------------------------------------------------------------------- Wachter

def wachter_study(seeds=(0,), cache_dir="cache", n_test=N_TEST, datasets=("compas", "adult")) -> dict:
    """Wachter: the fork's clamp acts on a copy, and its categoricals never move."""
    rows = []
    for s in cases(datasets, seeds, cache_dir, n_test):
        ds = s.bench.ds
        for label, name, immutable in [("clamped, categoricals move (wachter)", "wachter", ds.immutable),
                                       ("clamped, categoricals held", "wachter", ds.immutable | ds.categorical),
                                       ("not clamped, categoricals held (wachter_paper)", "wachter_paper",
                                        ds.immutable)]:
            method = evaluate.make_method(name, s.seed, verbose=False)
            with torch_threads(1):
                method.fit(ds.X_train, ds.y_train, s.bench.h, immutable=immutable,
                           categorical=ds.categorical, groups=ds.groups)
            X_plus = recourse(method, s)
            outside = ((X_plus < 0) | (X_plus > 1)).any(axis=1)
            inlier = s.lof.predict(X_plus) == 1
            rows.append(row(s, label, X_plus, failed=method.n_failed_, outside=int(outside.sum()),
                            lof_outside=float(inlier[outside].mean()) if outside.any() else None,
                            lof_inside=float(inlier[~outside].mean()) if (~outside).any() else None))
    return study("wachter", "Why is Wachter's compas LOF far above the paper's 0.23, with the same search?",
                 "the clamp to [0, 1] and whether categoricals move",
                 {"failed": "rows h rejects", "outside": "recourses with a feature outside [0, 1]",
                  "lof_outside": "LOF inlier share of those", "lof_inside": "LOF inlier share of the others"},
                 rows, datasets)


# ----------------------------------------------------------------------------- CCHVAE

def cchvae_study(seeds=(0,), cache_dir="cache", n_test=N_TEST, datasets=("compas",),
                 max_iter: int = 1000) -> dict:
    """CCHVAE on compas: where the VAE is fitted, whether immutables are held, and a VAE that
    did not collapse. Slow: a row that finds no positive scans all max_iter shells (the fork's
    1000; fewer would change the answer, as some rows find theirs late)."""
    rows = []
    variants = [("cchvae_paper (VAE on the train split)", "cchvae_paper", {}),
                ("VAE on the test split (the runner's glue)", "cchvae_paper", {"train_on": "test"}),
                ("test split and immutables free (the fork)", "cchvae_paper",
                 {"train_on": "test", "free_immutables": True}),
                ("cchvae (designed VAE, not collapsed)", "cchvae", {})]
    for s in cases(datasets, seeds, cache_dir, n_test):
        for label, name, kw in variants:
            method = fit_variant(name, s, max_iter=max_iter, **kw)
            X_plus = recourse(method, s)
            counts = dict(failed=method.n_failed_, active_units=method.active_units_)
            rows.append(row(s, label, X_plus, **counts))
            accepted = h_accepts(s, X_plus)
            if 0 < accepted.sum() < len(accepted):
                rows.append(row(s, label + ", rows h accepts", X_plus, accepted, **counts))
    return study("cchvae", "Why is cchvae_paper's compas validity far below the paper's 1.00?",
                 "the VAE's training rows, immutables, a VAE that did not collapse",
                 {"failed": "rows h rejects", "active_units": "latent units the VAE's encoder uses"},
                 rows, datasets, max_iter=max_iter)


# ----------------------------------------------------------------------------- CRUDS

def cruds_study(seeds=(0,), cache_dir="cache", n_test=N_TEST, datasets=("adult", "heloc")) -> dict:
    """CRUDS: whether the decoded recourse keeps x's immutables (ours) or the CSVAE's own
    (the fork), and the rows the CSVAE is fitted on (the runner's glue: the test split)."""
    rows = []
    variants = [("cruds_paper (CSVAE on the train split)", {}),
                ("immutables free (the fork)", {"free_immutables": True}),
                ("CSVAE on the test split (the runner's glue)", {"train_on": "test"}),
                ("test split and immutables free", {"train_on": "test", "free_immutables": True})]
    for s in cases(datasets, seeds, cache_dir, n_test):
        for label, kw in variants:
            if kw.get("free_immutables") and not s.bench.ds.immutable.any():
                continue                                          # heloc has no immutable feature
            method = fit_variant("cruds_paper", s, **kw)
            X_plus = recourse(method, s)
            rows.append(row(s, label, X_plus, failed=method.n_failed_, active_units=method.active_units_,
                            distinct=int(len(np.unique(np.round(X_plus, 3), axis=0)))))
    return study("cruds", "Why is cruds_paper's adult LOF below the paper's 0.96 and its heloc cost below 4.30?",
                 "immutables held or decoded, the CSVAE's training rows",
                 {"failed": "rows h rejects", "active_units": "latent units of z the encoder uses",
                  "distinct": "distinct recourses among the test negatives' (3 decimals)"}, rows, datasets)


STUDIES = {"probe": probe_study, "tap": tap_study, "roar": roar_study, "wachter": wachter_study,
           "cchvae": cchvae_study, "cruds": cruds_study}


# ----------------------------------------------------------------------------- rendering

def mean_rows(result: dict) -> list[dict]:
    """The study's rows averaged over seeds, one per (data set, variant), in first-seen order."""
    groups: dict = {}
    for r in result["rows"]:
        groups.setdefault((r["data"], r["variant"]), []).append(r)
    out = []
    for (data, variant), rs in groups.items():
        m = {"data": data, "variant": variant, "seeds": [r["seed"] for r in rs]}
        for key in [*METRICS, "h_valid", "immutable_violations", *result["counts"]]:
            vals = [r[key] for r in rs if r.get(key) is not None]
            m[key] = float(np.mean(vals)) if vals else None
        out.append(m)
    return out


def cell(v, count: bool = False) -> str:
    """A metric with two decimals; a count as a whole number where it is one (one seed)."""
    if v is None:
        return ""
    return f"{v:.0f}" if count and float(v).is_integer() else f"{v:.2f}"


def study_lines(result: dict) -> list[str]:
    """One study as markdown: its question, what was varied, a table with the paper's row."""
    counts = list(result["counts"])
    header = "| data | variant | Cost | Val | LOF | Score | h accepts | " + " | ".join(counts) + " |"
    body, last = [], None
    for m in mean_rows(result):
        if last and m["data"] != last and last in result["paper"]:
            body.append([last, "*the paper's Table 2*", *(f"{v:.2f}" for v in result["paper"][last]),
                         "", *([""] * len(counts))])
        body.append([m["data"], m["variant"], *(cell(m[k]) for k in METRICS), cell(m["h_valid"]),
                     *(cell(m[k], count=True) for k in counts)])
        last = m["data"]
    if last in result["paper"]:
        body.append([last, "*the paper's Table 2*", *(f"{v:.2f}" for v in result["paper"][last]),
                     "", *([""] * len(counts))])
    seeds = sorted({r["seed"] for r in result["rows"]})
    lines = [f"### {result['study']}: {result['question']}", "",
             f"Varied: {result['varied']}; seeds {seeds}, means over seeds. Columns: "
             + "; ".join(f"{k}: {v}" for k, v in result["counts"].items()) + ".", ""]
    lines += table(header, body)
    if "round_seconds" in result:
        lines += ["", "One 200-step round of the fork's per-row loop takes "
                  + ", ".join(f"{v:.2f} s on {d} ({30 / v:.0f} rounds in 30 s)"
                              for d, v in result["round_seconds"].items()) + " on this machine."]
    return lines + [""]


def run_studies(names, seeds, cache_dir, n_test=N_TEST, log=print) -> dict:
    """The studies `names` (keys of STUDIES) on `seeds`: {"seeds", "n_test", "studies", "seconds"}."""
    out = {"seeds": list(seeds), "n_test": n_test, "studies": {}, "seconds": {}}
    for name in names:
        t0 = time.time()
        out["studies"][name] = STUDIES[name](tuple(seeds), cache_dir, n_test)
        out["seconds"][name] = time.time() - t0
        log("\n".join(study_lines(out["studies"][name])) + f"\n({name}: {out['seconds'][name]:.0f} s)\n")
    return out


def gaps_section(data: dict) -> list[str]:
    """Every study of a gaps.json (as main() writes it) as markdown lines."""
    lines = []
    for name in data["studies"]:
        lines += study_lines(data["studies"][name])
    return lines


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Rerun the studies that explain where our NAME_paper rows differ "
                                            "from the paper's Table 2; print each table and write <out>/gaps.json.")
    p.add_argument("--only", nargs="+", choices=list(STUDIES), default=list(STUDIES),
                   help="studies to run (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (default: 0)")
    p.add_argument("--n-test", type=int, default=N_TEST, help=f"test negatives per seed (default {N_TEST})")
    p.add_argument("--out", default=os.path.join("runs", "gaps"), help="folder for gaps.json (default runs/gaps)")
    p.add_argument("--cache", default="cache", help="folder for cached oracle, h and models (default cache/)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    published = os.path.realpath(evaluate.PUBLISHED)
    if os.path.commonpath([os.path.realpath(args.out), published]) == published:
        print("error: results/ holds the published numbers; choose another --out folder", file=sys.stderr)
        return 2
    if args.n_test < 1 or len(set(args.seeds)) != len(args.seeds):
        print("error: --n-test must be at least 1 and --seeds must not repeat a seed", file=sys.stderr)
        return 2
    out = run_studies(args.only, args.seeds, args.cache, args.n_test,
                      log=lambda text: print(text, flush=True))
    out["provenance"] = provenance()
    path = os.path.join(args.out, "gaps.json")
    atomic_write(path, lambda f: f.write(json.dumps(out, indent=2).encode()))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
