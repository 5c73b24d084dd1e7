"""Speed and memory of the pipeline, measured and written to BENCHMARKS.md.

    python bench.py                      # parts 1-4 and the constraints' cost (~15 minutes on 2 cores)
    python bench.py --only throughput --json out.json    # just GenRe's throughput, raw numbers kept
    python bench.py --scaling            # 5. scaling study on synthetic data, and figures/scaling.png
    python bench.py --million            # 6. a million rows: prefiltered pairing vs exact on 100k
    python bench.py --pairing-error      # 7. the prefilter's error against the exact top K

What is measured (each a median over --repeats runs unless said otherwise):
  1. GenRe training: milliseconds per optimiser step, and the steps a fit runs, apart,
     for GenReConfig() and GenReConfig.paper_sizes();
  2. sampling throughput, samples per second, 2,000 negatives x 10 samples;
  3. building adult's pairing distribution Q: seconds and peak resident memory;
  4. `python evaluate.py --dataset D` end to end from a cold cache, per data set:
     seconds per stage and peak resident memory, with GenRe's Score; and GenRe.recourse
     with and without constraints given at recourse time (adult, --only constraints);
  5. loading, pairing, training and 1,000 recourses on a synthetic table of
     N = 10k, 100k, 1M rows (d = 13) and 100k (d = 21): seconds and peak memory
     per stage, one run each;
  6. GenRe.fit on 1M rows with pairing.prefiltered_pairing plus 1,000 recourses
     (15 minutes / 8 GB bound) and its Score against the exact pairing on 100k;
  7. recall and total variation of the prefiltered Q against the exact top K;
  8. (--only threads) GenRe's fit and recourse on compas at 1 torch thread and at every core,
     and whether the numbers stay bit-identical;
  9. (--only flops) the machine's attainable float32 rate (a large matmul) at 1 thread and
     every core, and the FLOPs, seconds and achieved fraction of that rate of one training
     step and of sampling, for GenReConfig() and GenReConfig.paper_sizes();
 10. (--only distributed) GenRe's training in 1 and in 2 local processes (distributed.py,
     gloo), milliseconds per step, on the throughput part's synthetic data.
Stages 3-6 run in child processes, so their peak memory is their own. Parts
5-7 each replace their own marked section of BENCHMARKS.md; a full run of 1-4
keeps those sections.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.neighbors import LocalOutlierFactor
from sklearn.neural_network import MLPClassifier
from torch.utils.flop_counter import FlopCounterMode

from common import (atomic_write, check_folder, command_line, cpu_model, positive_int, provenance, torch_threads,
                    write_section)
from datasets import ADULT_RULES, from_csv, load
from distributed import DataParallelGenRe
from engine import Settings, pairing_method
from evaluate import DEFAULT_METHODS, fit_genre, fit_one, make_method, pick_test_negatives, prepare
from engine import cached_decoder
from genre import (GenRe, GenReConfig, RecourseTransformer, feature_kinds, make_bins, make_pairs, pairing_distribution,
                   sample_recourse, sampling_noise, train_step, training_sets, training_steps)
from pairing import compare_with_exact, prefiltered_pairing

HERE = os.path.dirname(os.path.abspath(__file__))


def machine() -> str:
    """One line naming the machine: CPU model, cores, torch version, device."""
    cpu = cpu_model()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), device: {device}")


# ----------------------------------------------------------------------------- 1-2. throughput

def throughput(paper: bool, steps: int, n_rows: int = 20000, n_features: int = 13,
               n_neg: int = 2000, seed: int = 0) -> tuple[float, float, float, int, int]:
    """GenRe on random data labelled by a fixed linear h: (ms per training step, candidate
    samples/s, recourses/s, the batch, the steps a fit of this config runs).

    Training time is the optimiser loop alone (the fit's history). Candidate samples: 10 per
    row for n_neg rows with the fast (cached) decoder. Recourses: the whole recourse() call
    for n_neg rows (10 candidates each, h on them, the choice).
    """
    X, y, h = synthetic_fit_data(n_rows, n_features, seed)
    full = GenReConfig.paper_sizes() if paper else GenReConfig()
    cfg = GenReConfig.paper_sizes(steps=steps) if paper else GenReConfig(steps=steps)
    model = GenRe(cfg, random_state=seed, verbose=False, settings=Settings(eval_every=steps)).fit(X, y, h)
    train_seconds = model.history_[-1]["seconds"]
    model.recourse(X[:10])                                                  # warm up
    t0 = time.time()
    model.sample(X[:n_neg])
    t1 = time.time()
    model.recourse(X[:n_neg])
    t2 = time.time()
    n_train = int(round(0.9 * ((y == 0) & (h.predict_proba(X) <= 0.5)).sum()))   # training sources
    batch, fit_steps = training_steps(n_train, n_features, full)
    return 1000 * train_seconds / steps, n_neg * cfg.n_samples / (t1 - t0), n_neg / (t2 - t1), batch, fit_steps


def matmul_rate(threads: int, repeats: int, n: int = 2048) -> float:
    """The attainable float32 rate, GFLOP/s: the median of `repeats` n x n matmuls (2 n^3 FLOPs)
    on `threads` torch threads."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    with torch_threads(threads):
        a @ b                                                                # warm up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def counted_seconds(work, repeats: int) -> tuple[float, float]:
    """(FLOPs of one call of work() as torch.utils.flop_counter counts them, the median seconds
    of `repeats` calls after one to warm up)."""
    with FlopCounterMode(display=False) as counter:
        work()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return counter.get_total_flops(), statistics.median(times)


def flop_rates(repeats: int, n_features: int = 13, n_rows: int = 200, n_samples: int = 10) -> dict:
    """Part 9: the attainable rate, and for GenReConfig() and GenReConfig.paper_sizes() at D =
    n_features (adult's 13) one training step on its config's batch of random pairs, and
    Algorithm 2 for n_rows rows, n_samples each (cached decoder): FLOPs, median seconds,
    achieved GFLOP/s and the fraction of the one-thread rate, all on one thread."""
    out = {"attainable_gflops": {1: matmul_rate(1, repeats), os.cpu_count(): matmul_rate(os.cpu_count(), repeats)},
           "n_features": n_features, "n_rows": n_rows, "n_samples": n_samples, "repeats": repeats, "configs": {}}
    torch.manual_seed(0)
    D = n_features
    for name, cfg in (("GenReConfig()", GenReConfig()), ("GenReConfig.paper_sizes()", GenReConfig.paper_sizes())):
        print(f"  flops: {name} ...", flush=True)
        with torch_threads(1):
            model = RecourseTransformer(D, cfg)
            bins = make_bins(torch.rand(1000, D), cfg.n_bins)
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)
            x, x_plus = torch.rand(cfg.batch_size, D), torch.rand(cfg.batch_size, D)
            model.train()
            train = counted_seconds(lambda: train_step(model, opt, x, x_plus, bins), repeats)
            kinds = feature_kinds(D, np.zeros(D, bool), np.zeros(D, bool))
            rows = torch.rand(n_rows, D)
            u, eps = sampling_noise(n_rows * n_samples, D, 0)
            sample = counted_seconds(lambda: sample_recourse(model, rows, n_samples, u, eps, bins, kinds, cfg.tau,
                                                             cfg.sigma, cached_decoder), repeats)
        one = out["attainable_gflops"][1]
        out["configs"][name] = {
            "model": model_size(name != "GenReConfig()"), "batch": cfg.batch_size, "dropout": cfg.dropout,
            **{f"{part}_{k}": v for part, (flops, sec) in (("step", train), ("sampling", sample))
               for k, v in (("gflop", flops / 1e9), ("seconds", sec), ("gflops", flops / sec / 1e9),
                            ("fraction", flops / sec / 1e9 / one))}}
    return out


def synthetic_fit_data(n_rows: int, n_features: int, seed: int):
    """The throughput part's data: random rows, labels drawn from a fixed linear h, and that h."""
    rng = np.random.default_rng(seed)
    X = rng.random((n_rows, n_features)).astype(np.float32)
    w = torch.from_numpy(rng.normal(size=n_features).astype(np.float32))

    class LinearH:                                    # h(x) = sigmoid(5 (x - 1/2) . w)
        def predict_proba(self, X):
            return torch.sigmoid(5 * (torch.as_tensor(X) - 0.5) @ w).numpy()

    y = (rng.random(n_rows) < LinearH().predict_proba(X)).astype(int)
    return X, y, LinearH()


def data_parallel_run(rank: int, world: int, store: str, out: str, steps: int, n_features: int) -> None:
    """One process of part 10: DataParallelGenRe for `steps` steps; process 0 writes its
    training seconds (the optimiser loop alone, the fit's history) to `out`."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        X, y, h = synthetic_fit_data(20000, n_features, 0)
        model = DataParallelGenRe(GenReConfig(steps=steps), random_state=0, verbose=False,
                                  settings=Settings(eval_every=steps)).fit(X, y, h)
        if rank == 0:
            with open(out, "w") as f:
                f.write(str(model.history_[-1]["seconds"]))
    finally:
        dist.destroy_process_group()


def data_parallel_speed(repeats: int, steps: int = 100, n_features: int = 13) -> dict:
    """Part 10: ms per training step of GenReConfig() in 1 and in 2 processes (one thread
    each), the median of `repeats` runs."""
    n_params = sum(p.numel() for p in RecourseTransformer(n_features, GenReConfig()).parameters())
    out = {"steps": steps, "n_features": n_features, "repeats": repeats, "n_params": n_params, "processes": {}}
    for world in (1, 2):
        times = []
        for r in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                result = os.path.join(tmp, "seconds")
                mp.spawn(data_parallel_run, args=(world, os.path.join(tmp, "store"), result, steps, n_features),
                         nprocs=world, join=True)
                times.append(float(open(result).read()))
            print(f"  {world} process(es), run {r + 1}/{repeats}: {1000 * times[-1] / steps:.1f} ms a step", flush=True)
        out["processes"][world] = {"ms_per_step": 1000 * statistics.median(times) / steps}
    return out


def model_size(paper: bool) -> str:
    """The timed config's transformer, in words (recorded beside its throughput)."""
    c = GenReConfig.paper_sizes() if paper else GenReConfig()
    return f"{c.n_enc_layers}+{c.n_dec_layers} layers, {c.n_heads} head{'s' * (c.n_heads > 1)}, d_model {c.d_model}"


def median_throughput(paper: bool, steps: int, repeats: int, n_features: int) -> dict:
    runs = [throughput(paper, steps, n_features=n_features, seed=r) for r in range(repeats)]
    return {"ms_per_step": statistics.median(r[0] for r in runs),
            "samples_per_s": statistics.median(r[1] for r in runs),
            "recourses_per_s": statistics.median(r[2] for r in runs),
            "batch": runs[0][3], "fit_steps": runs[0][4],
            "steps": steps, "n_features": n_features, "repeats": repeats, "machine": machine(),
            "model": model_size(paper)}


def code_state() -> str:
    """The commit the measurement ran with, and GenReConfig()'s budget and sizes then."""
    p, c = provenance(), GenReConfig()
    commit = f"commit {str(p['commit'])[:10]}" + (" with uncommitted changes" if p["dirty"] else "")
    return (f"{commit}; GenReConfig(): {c.n_enc_layers}+{c.n_dec_layers} layers, lr {c.lr:g}, batch {c.batch_size}, "
            f"at most {c.feature_steps} / d steps, tau {c.tau:g}")


# adult has 13 features, heloc 21: a step and a sample cost about D tokens each
THROUGHPUT_FEATURES = (13, 21)


# ----------------------------------------------------------------------------- 3-4. child processes

# The child reports its own peak resident memory (VmHWM) as it exits. The
# kernel's ru_maxrss of a child is no good here: it keeps the high-water mark of
# the parent's memory that the child was forked from, and this parent holds the
# paper()-sized model of the throughput runs.
PEAK = """
try:
    {body}
finally:
    with open("/proc/self/status") as f:
        print("PEAK_KB", next(line.split()[1] for line in f if line.startswith("VmHWM")))
"""
RUN_SCRIPT = "import runpy, sys; sys.argv = {argv!r}; runpy.run_path(sys.argv[0], run_name='__main__')"


def run_child(code: str) -> tuple[float, float, str]:
    """Run Python code in a child; return (seconds, the child's peak resident MB, stdout)."""
    t0 = time.time()
    body = "exec(" + repr(code) + ")"
    proc = subprocess.run([sys.executable, "-c", PEAK.format(body=body)], cwd=HERE, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed:\n{proc.stdout[-2000:]}")
    peak_kb = int(proc.stdout.rsplit("PEAK_KB", 1)[1].split()[0])
    return time.time() - t0, peak_kb / 1024, proc.stdout


PAIRING_CHILD = """
import time, torch, evaluate, genre
cfg, b = genre.GenReConfig(), evaluate.prepare("adult", 0, cache_dir=%r, verbose=False)
ds = b.ds
neg, pos = genre.training_sets(ds.y_train, b.h.predict_proba(ds.X_train), cfg.gamma)
neg, pos = torch.from_numpy(ds.X_train[neg]), torch.from_numpy(ds.X_train[pos])    # D_h^-, D_h^+
t0 = time.time()
genre.pairing_distribution(neg, pos, cfg.lam, torch.from_numpy(ds.immutable), cfg.top_k)
print("PAIRING", time.time() - t0, len(neg), len(pos))
"""


def pairing(cache: str, repeats: int) -> dict:
    """Seconds to build Q for adult (|D_h^-| x |D_h^+| costs, top 1000), and the child's peak memory."""
    run_child(PAIRING_CHILD % cache)                                         # fills the cache
    runs = []
    for _ in range(repeats):
        _, rss, out = run_child(PAIRING_CHILD % cache)
        sec, n_neg, n_pos = out.split("PAIRING")[1].split()[:3]
        runs.append((float(sec), rss))
    return {"seconds": statistics.median(r[0] for r in runs), "peak_mb": max(r[1] for r in runs),
            "n_neg": int(n_neg), "n_pos": int(n_pos), "repeats": repeats}


def end_to_end(dataset: str, repeats: int) -> dict:
    """`python evaluate.py --dataset D` (the README's command: evaluate.DEFAULT_METHODS, seed 0)
    from an empty cache: stage seconds and peak memory."""
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            argv = ["evaluate.py", "--dataset", dataset, "--quiet",
                    "--cache", os.path.join(tmp, "cache"), "--out", tmp]
            sec, rss, _ = run_child(RUN_SCRIPT.format(argv=argv))
            with open(os.path.join(tmp, f"{dataset}.json")) as f:
                res = json.load(f)
        stages = dict(res["stage_seconds"])
        for m, r in res["methods"].items():
            if m == "genre":
                stages["genre fit (pairs + training)"] = r["fit_seconds"]
                stages["genre sampling"] = r["recourse_seconds"]
            else:
                stages[m] = r["seconds"]
        stages["scoring (all methods)"] = sum(r["score_seconds"] for r in res["methods"].values())
        runs.append({"total": sec, "peak_mb": rss, "stages": stages,
                     "genre_score": res["methods"]["genre"]["score"]})
    med = lambda xs: statistics.median(xs)
    return {"total": med(r["total"] for r in runs), "peak_mb": max(r["peak_mb"] for r in runs),
            "genre_score": med(r["genre_score"] for r in runs), "repeats": repeats,
            "stages": {k: med(r["stages"][k] for r in runs) for k in runs[0]["stages"]}}


def constraint_overhead(cache: str, repeats: int) -> dict:
    """GenRe.recourse on adult's test negatives (seed 0, GenReConfig(), one torch thread) with
    and without the constrained study's rules given at recourse time, alternately: median
    seconds of each, per recourse too, and their ratio."""
    bench = prepare("adult", 0, cache, verbose=False)
    genre = fit_genre(bench, GenReConfig(), verbose=False)
    X = pick_test_negatives(bench, 10 ** 9)                        # every test row h turns down
    rules = load("adult").constraints(**ADULT_RULES)
    times = {"without": [], "with": []}
    with torch_threads(1):
        for _ in range(repeats):
            for key, kw in (("without", {}), ("with", {"constraints": rules})):
                t0 = time.perf_counter()
                genre.recourse(X, **kw)
                times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"rows": len(X), "repeats": repeats, "seconds": med,
            "ms_per_recourse": {k: 1000 * v / len(X) for k, v in med.items()},
            "ratio": med["with"] / med["without"]}


def thread_speed(cache: str, repeats: int, dataset: str = "compas") -> dict:
    """GenRe (GenReConfig()) fitted on `dataset`'s seed 0 and asked for recourse for its 200 test
    negatives at 1 torch thread and at every core, alternately: median seconds of the fit and
    of the recourse call, per step and per recourse too, and whether the trained weights and
    the recourses are bit-identical to one thread's."""
    bench = prepare(dataset, 0, cache, verbose=False)
    X = pick_test_negatives(bench, 200)
    counts = sorted({1, os.cpu_count() or 1})
    times = {n: {"fit": [], "recourse": []} for n in counts}
    outputs = {}
    for r in range(repeats):
        for n in counts:
            with torch_threads(n):
                t0 = time.perf_counter()
                genre = fit_one(make_method("genre", 0, {"genre": GenReConfig()}, verbose=False), bench)
                t1 = time.perf_counter()
                X_plus = genre.recourse(X)
                t2 = time.perf_counter()
            times[n]["fit"].append(t1 - t0)
            times[n]["recourse"].append(t2 - t1)
            weights = [p.detach().numpy().copy() for p in genre.model_.parameters()]
            outputs.setdefault(n, (weights, X_plus))
            print(f"  threads {n}, run {r + 1}/{repeats}: fit {t1 - t0:.1f} s, recourse {t2 - t1:.2f} s", flush=True)
    steps = len(genre.history_) and genre.history_[-1]["step"]
    same = lambda n: (all(np.array_equal(a, b) for a, b in zip(outputs[n][0], outputs[1][0]))
                      and np.array_equal(outputs[n][1], outputs[1][1]))
    rows = {}
    for n in counts:
        fit, rec = statistics.median(times[n]["fit"]), statistics.median(times[n]["recourse"])
        rows[n] = {"fit_s": fit, "ms_per_step": 1000 * fit / steps, "recourse_s": rec,
                   "ms_per_recourse": 1000 * rec / len(X), "identical": same(n)}
    return {"dataset": dataset, "steps": steps, "rows": len(X), "repeats": repeats, "threads": rows}


# ----------------------------------------------------------------------------- 5. synthetic tabular data

# The scaling study's table: two immutable binaries (like sex and race), a few
# mutable binaries and correlated continuous features, all in [0, 1], and a
# nonlinear label rule. The mixing matrix is fixed (seed 1234) for every n, so
# tables of different sizes come from one distribution.

def column_counts(d: int) -> tuple[int, int, int]:
    """(immutable binaries, mutable binaries, continuous) for d features: (2, 2, 9) at d = 13."""
    n_bin = 2 + max(0, d - 13) // 8
    if d < 2 + n_bin + 4:
        raise ValueError(f"the synthetic table needs at least {2 + n_bin + 4} features, got {d}")
    return 2, n_bin, d - 2 - n_bin


def true_logit(X: np.ndarray) -> np.ndarray:
    """The generator's label rule f(x); P(y = 1 | x) = sigmoid(3 f(x)), so x is valid iff f(x) > 0.
    X (n, d) -> (n,). Nonlinear in the first four continuous features c0..c3."""
    n_imm, n_bin, _ = column_counts(X.shape[1])
    imm, b, c = X[:, :n_imm], X[:, n_imm:n_imm + n_bin], X[:, n_imm + n_bin:]
    f = (2 * np.sin(4 * c[:, 0]) + 4 * c[:, 1] * c[:, 2] - 6 * (c[:, 3] - 0.5) ** 2
         + 2 * c[:, 4:].mean(1) + b[:, 0] - 0.5 * b[:, 1] + 0.5 * imm[:, 0] - 0.5 * imm[:, 1])
    return f - 2.75                                         # about half the rows valid at d = 13


def synthetic(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n rows of the synthetic table: X (n, d) float32 in [0, 1], y (n,) int64 ~ Bernoulli(sigmoid(3 f))."""
    n_imm, n_bin, n_cont = column_counts(d)
    mix = np.random.default_rng(1234).normal(size=(n_cont, n_cont)) / np.sqrt(n_cont)   # fixed
    rng = np.random.default_rng(seed)
    binary = (rng.random((n, n_imm + n_bin)) < 0.5).astype(np.float32)
    cont = 1 / (1 + np.exp(-1.5 * rng.normal(size=(n, n_cont)) @ mix))     # correlated, in (0, 1)
    X = np.concatenate([binary, cont.astype(np.float32)], axis=1)
    y = (rng.random(n) < 1 / (1 + np.exp(-3 * true_logit(X)))).astype(np.int64)
    return X, y


def synthetic_masks(d: int) -> tuple[np.ndarray, np.ndarray]:
    """(immutable, categorical) (d,) bool masks of the synthetic table."""
    n_imm, n_bin, _ = column_counts(d)
    immutable, categorical = np.zeros(d, bool), np.zeros(d, bool)
    immutable[:n_imm], categorical[:n_imm + n_bin] = True, True
    return immutable, categorical


class SmallMLP:
    """The scaling study's h: sklearn's MLP (32, 32), fitted on the table's first 20,000 rows
    (a few seconds); predict_proba(X) -> (N,) P(y = 1 | x) as GenRe expects."""

    def __init__(self, X: np.ndarray, y: np.ndarray, n_fit: int = 20000):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                  # 60 epochs: "not converged" is expected
            self.mlp = MLPClassifier((32, 32), max_iter=60, random_state=0).fit(X[:n_fit], y[:n_fit])

    def predict_proba(self, X):
        return self.mlp.predict_proba(np.asarray(X))[:, 1]


def test_negatives(h, d: int, n: int = 1000) -> np.ndarray:
    """n fresh rows of the generator (seed 1) that h rejects, h(x) <= 0.5: the rows given recourse."""
    X, _ = synthetic(4 * n + 1000, d, seed=1)
    return X[h.predict_proba(X) <= 0.5][:n]


def recourse_quality(X: np.ndarray, X_plus: np.ndarray) -> dict:
    """Sec. 5.1's metrics with the generator as the oracle: Val (f(x+) > 0), LOF (share of
    inliers of a LocalOutlierFactor(5, novelty=True) fitted on 20,000 fresh rows the rule
    accepts), Cost (mean L1), Score = Val + LOF - Cost / d."""
    d = X.shape[1]
    ref, _ = synthetic(40000, d, seed=2)
    lof = LocalOutlierFactor(n_neighbors=5, novelty=True).fit(ref[true_logit(ref) > 0][:20000])
    val = float((true_logit(X_plus) > 0).mean())
    inlier = float((lof.predict(X_plus) == 1).mean())
    cost = float(np.abs(X_plus - X).sum(1).mean())
    return dict(val=val, lof=inlier, cost=cost, score=val + inlier - cost / d)


# ----------------------------------------------------------------------------- 6. stages in one child

def reset_peak() -> None:
    """Start a new resident-memory high-water mark (Linux: clear_refs 5 resets VmHWM)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmHWM"))) / 1024


def stage(name: str, fn, out: dict):
    """Run fn() as one measured stage: out[name] = wall seconds, CPU seconds of this process
    (on a shared machine, the wall time of a free core when torch runs one thread), and
    the process's peak MB during it."""
    gc.collect()
    reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    out[name] = dict(seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0,
                     peak_mb=peak_mb())
    return result


def load_stage(X: np.ndarray, y: np.ndarray, out: dict) -> None:
    """Write the table to a CSV in /tmp (untimed) and time datasets.from_csv on it."""
    d = X.shape[1]
    n_imm, n_bin, _ = column_counts(d)
    names = [f"imm{j}" for j in range(n_imm)] + [f"bin{j}" for j in range(n_bin)] + \
            [f"c{j}" for j in range(d - n_imm - n_bin)]
    path = os.path.join(tempfile.gettempdir(), f"genre_synthetic_{len(X)}_{d}.csv")
    fmt = ["%d"] * (n_imm + n_bin) + ["%.6f"] * (d - n_imm - n_bin) + ["%d"]
    np.savetxt(path, np.column_stack([X, y]), fmt=fmt, delimiter=",", header=",".join(names + ["y"]),
               comments="")
    try:
        stage("loading", lambda: from_csv(path, target="y", categorical=names[:n_imm + n_bin],
                                                   immutable=names[:n_imm]), out)
    finally:
        os.unlink(path)


def pairing_stage(X, y, h, immutable, out: dict) -> None:
    """Eq. 6 as GenRe.fit builds it with the default config: for at most max_sources rows of
    D_h^- (a uniform subsample), over all of D_h^+, exact or prefiltered (pairing="auto")."""
    cfg, settings = GenReConfig(), Settings()
    neg, pos = training_sets(y, h.predict_proba(X), cfg.gamma)
    order = np.random.default_rng(0).permutation(int(neg.sum()))[:settings.max_sources]
    src, dst, imm = torch.from_numpy(X[neg][order]), torch.from_numpy(X[pos]), torch.from_numpy(immutable)
    stage("pairing", lambda: make_pairs(src, dst, cfg.lam, imm, cfg.top_k, settings.pairing), out)
    out["pairing"].update(mode=pairing_method(settings.pairing, len(src), len(dst)), n_neg=int(neg.sum()),
                          n_src=len(src), n_pos=len(dst))


def scaling_run(n: int, d: int, threads: int = 1) -> None:
    """One configuration of the scaling study, every stage measured; prints RESULT {json}."""
    torch.set_num_threads(threads)
    X, y = synthetic(n, d)
    immutable, categorical = synthetic_masks(d)
    out = dict(n=n, d=d)
    load_stage(X, y, out)
    h = SmallMLP(X, y)
    pairing_stage(X, y, h, immutable, out)
    model = stage("training", lambda: GenRe(verbose=False).fit(X, y, h, immutable, categorical), out)
    out["training"].update(loop_seconds=model.history_[-1]["seconds"],
                           steps=model.history_[-1]["step"])
    X_neg = test_negatives(h, d)
    X_plus = stage("1,000 recourses", lambda: model.recourse(X_neg), out)
    out["1,000 recourses"].update(val=float((true_logit(X_plus) > 0).mean()))
    print("RESULT", json.dumps(out))


MILLION_CONFIGS = {"default": {}, "exact": dict(pairing="exact", max_sources=None)}


def million_run(n: int, config: str, threads: int = 1) -> None:
    """GenRe.fit on the first n rows of the 1M table plus 1,000 recourses, timed and measured
    as one stage, then scored; config: "default" (GenReConfig()) or "exact" (Eq. 6 exactly
    for every source). Prints RESULT {json}."""
    torch.set_num_threads(threads)
    X, y = synthetic(1_000_000, 13)
    X, y = X[:n], y[:n]
    immutable, categorical = synthetic_masks(13)
    h, out = SmallMLP(X, y), dict(n=n, config=config)
    X_neg = test_negatives(h, 13)
    settings = Settings(**MILLION_CONFIGS[config])

    def fit_and_recourse():
        model = GenRe(verbose=False, settings=settings).fit(X, y, h, immutable, categorical)
        out["fit_seconds"] = model.fit_seconds_
        return model.recourse(X_neg)

    X_plus = stage("fit + 1,000 recourses", fit_and_recourse, out)
    out.update(recourse_quality(X_neg, X_plus))
    print("RESULT", json.dumps(out))


def child_result(code: str) -> dict:
    """run_child(code) and the RESULT line it printed."""
    _, _, stdout = run_child(code)
    return json.loads(stdout.split("RESULT", 1)[1].splitlines()[0])


# ----------------------------------------------------------------------------- 7. the studies

SCALING = [(10_000, 13), (100_000, 13), (100_000, 21), (1_000_000, 13)]     # the longest last
ERROR_TABLES = [(100_000, 13), (100_000, 21), (1_000_000, 13)]
STAGES = ("loading", "pairing", "training", "1,000 recourses")


def scaling(sizes, threads: int, publish, jobs: int = 2) -> list[dict]:
    """Every (n, d) of SCALING with n in sizes, each in its own child process, `jobs` children
    side by side (one core each), the longest first; publish(runs) as each finishes, so a run
    cut short keeps what it measured."""
    todo = sorted(((n, d) for n, d in SCALING if n in sizes), key=lambda nd: -nd[0] * nd[1])
    runs = []
    with ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(child_result, f"import bench; bench.scaling_run({n}, {d}, {threads})")
                   for n, d in todo]
        for done in as_completed(futures):
            run = done.result()
            print(f"scaling: n = {run['n']:,}, d = {run['d']} done", flush=True)
            runs = sorted(runs + [run], key=lambda r: (r["d"], r["n"]))
            publish(runs)
    return runs


def million(n: int, subsample: int, threads: int) -> dict:
    """The prefiltered fit on n rows and the exact fit on the first `subsample` rows, in two
    child processes run side by side."""
    print(f"million: default config on {n:,} rows, exact pairing on {subsample:,} rows ...", flush=True)
    with ThreadPoolExecutor(2) as pool:
        big = pool.submit(child_result, f"import bench; bench.million_run({n}, 'default', {threads})")
        small = pool.submit(child_result, f"import bench; bench.million_run({subsample}, 'exact', {threads})")
        return dict(big=big.result(), small=small.result())


def pairing_error(n: int, d: int, n_candidates: int, repeats: int, n_rows: int = 2000) -> dict:
    """Exact Eq. 6 vs pairing.prefiltered_pairing for n_rows sources drawn at random from the
    synthetic table's D_h^-, each over all of D_h^+ (a source's Q does not depend on the other
    sources, so a sample measures the whole table's error): recall of the exact top K, total
    variation per row, certified rows, and the speed-up (median seconds of each, alternating)."""
    X, y = synthetic(n, d)
    immutable, _ = synthetic_masks(d)
    cfg, h = GenReConfig(), SmallMLP(X, y)
    neg, pos = training_sets(y, h.predict_proba(X), cfg.gamma)
    rows = np.random.default_rng(0).choice(int(neg.sum()), min(n_rows, int(neg.sum())), replace=False)
    src, dst = torch.from_numpy(X[neg][rows]), torch.from_numpy(X[pos])
    imm = torch.from_numpy(immutable)
    exact_s, approx_s, stats = [], [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        exact = pairing_distribution(src, dst, cfg.lam, imm, cfg.top_k)
        exact_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        approx = prefiltered_pairing(src, dst, cfg.lam, imm, cfg.top_k, n_candidates, stats=stats)
        approx_s.append(time.perf_counter() - t0)
    recall, tv = compare_with_exact(approx[0], approx[1], exact[0], exact[1], len(dst))
    ex, ap = statistics.median(exact_s), statistics.median(approx_s)
    return dict(n=n, d=d, n_candidates=n_candidates, n_neg=int(neg.sum()), n_pos=len(dst), n_rows=len(src),
                exact_s=ex, prefilter_s=ap, speedup=ex / ap, recall_mean=float(recall.mean()),
                recall_p01=float(recall.quantile(0.01)), tv_mean=float(tv.mean()),
                tv_p99=float(tv.quantile(0.99)), certified=float(stats["certified"].float().mean()),
                repeats=repeats)


# ----------------------------------------------------------------------------- 8. their sections

def growth_exponent(ns, values) -> float:
    """b in value ~ a N^b, the least-squares slope in log-log."""
    return float(np.polyfit(np.log(ns), np.log(values), 1)[0])


def scaling_section(runs: list[dict], command: str) -> str:
    out = ["## Scaling on synthetic tabular data", "",
           f"Written by `{command}` (load average {os.getloadavg()[0]:.1f} at the end, its own two "
           f"children included). Machine: {machine()}; {code_state()}.", "",
           "The table comes from `bench.synthetic` (2 immutable binaries, 2-3 mutable binaries, "
           "correlated continuous features, label y ~ Bernoulli(sigmoid(3 f(x))) with a nonlinear f); "
           "h is a (32, 32) MLP fitted on 20,000 rows. One child process per row, two side by side "
           "(one core each); each stage is one run "
           "(no repeats): wall seconds [CPU seconds of the process, one torch thread] and the "
           "process's peak resident memory during that stage "
           "(VmHWM reset before it; data held from earlier stages counts). Loading: the table written "
           "to a CSV, read by `datasets.from_csv`. Pairing: Eq. 6 as `GenRe.fit` builds it by default, "
           "for min(|D_h^-|, max_sources = 100,000) sources drawn uniformly, each over all of D_h^+, "
           "exact up to 2e9 costs, else `pairing.prefiltered_pairing`. Training: `GenRe.fit` with "
           "the default config (its pairing included; loop = the optimiser loop alone). "
           "Recourses: `GenRe.recourse` on 1,000 fresh rows with h <= 0.5 (the default choice, the best "
           "of 10 samples by h); Val under the generator's rule f > 0.", "",
           "| N | d | sources x D_h^+ | loading s | MB | pairing s | MB | training s (loop) | MB "
           "| recourses s | MB | Val |", "|---" * 12 + "|"]
    for r in runs:
        p, t, rc = r["pairing"], r["training"], r["1,000 recourses"]
        out.append(f"| {r['n']:,} | {r['d']} | {p['n_src']:,} x {p['n_pos']:,} "
                   f"| {r['loading']['seconds']:.1f} [{r['loading']['cpu_seconds']:.1f}] | {r['loading']['peak_mb']:,.0f} "
                   f"| {p['seconds']:.1f} [{p['cpu_seconds']:.1f}] {p['mode']} | {p['peak_mb']:,.0f} "
                   f"| {t['seconds']:.0f} [{t['cpu_seconds']:.0f}] (loop {t['loop_seconds']:.0f}, {t['steps']} steps) "
                   f"| {t['peak_mb']:,.0f} | {rc['seconds']:.1f} [{rc['cpu_seconds']:.1f}] | {rc['peak_mb']:,.0f} "
                   f"| {rc['val']:.3f} |")
    d13 = [r for r in runs if r["d"] == 13]
    if len(d13) >= 2:
        ns = [r["n"] for r in d13]
        out += ["", "Growth exponents b (time ~ N^b, memory ~ N^b) at d = 13, fitted over N = "
                + ", ".join(f"{n:,}" for n in ns) + ": "
                + "; ".join(f"{s} time {growth_exponent(ns, [r[s]['seconds'] for r in d13]):.2f}, "
                            f"memory {growth_exponent(ns, [r[s]['peak_mb'] for r in d13]):.2f}"
                            for s in STAGES) + ". Figure: `figures/scaling.png`."]
    return "\n".join(out)


def plot_scaling(runs: list[dict], path: str) -> None:
    """Log-log seconds and peak MB against N at d = 13, one line per stage, exponent in the legend."""
    import matplotlib                     # here, not at the top: only the figure needs matplotlib (slow to load)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    d13 = [r for r in runs if r["d"] == 13]
    ns = [r["n"] for r in d13]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in zip(axes, ("seconds", "peak_mb"), ("wall time (s)", "peak resident memory (MB)")):
        for s in STAGES:
            ys = [r[s][key] for r in d13]
            b = growth_exponent(ns, ys) if len(ns) >= 2 else float("nan")
            ax.loglog(ns, ys, "o-", label=f"{s} (N^{b:.2f})")
        ax.set_xlabel("rows N (d = 13)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("GenRe's stages on synthetic data: `python bench.py --scaling`")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))


def million_section(res: dict, command: str, load_before: float) -> str:
    big, small = res["big"], res["small"]
    key = "fit + 1,000 recourses"
    row = lambda r, what: (f"| {what} | {r['n']:,} | {r['fit_seconds']:.0f} | {r[key]['seconds']:.0f} "
                           f"| {r[key]['cpu_seconds']:.0f} "
                           f"| {r[key]['peak_mb']:,.0f} | {r['val']:.3f} | {r['lof']:.3f} | {r['cost']:.3f} "
                           f"| {r['score']:.3f} |")
    gap = big["score"] - small["score"]
    ok_time, ok_mem = big[key]["seconds"] <= 900, big[key]["peak_mb"] < 8192
    return "\n".join([
        "## A million rows on one machine", "",
        f"Written by `{command}`; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
        f"(its own two runs included). Machine: {machine()}; {code_state()}.", "",
        "`GenRe.fit` with the default config on the 1,000,000-row synthetic table (Eq. 6 for "
        "max_sources = 100,000 sources of D_h^- drawn uniformly, over all of D_h^+, by "
        "`pairing.prefiltered_pairing`), then `GenRe.recourse` for 1,000 fresh rows with h <= 0.5, "
        "timed as one run in a child process with its peak resident memory and CPU seconds; compared "
        "with GenRe fitted on the table's first 100,000 rows with Eq. 6 exact for every source "
        "(same h, same 1,000 rows), run side by side. Val: the generator's rule f(x+) > 0; "
        "LOF: inliers of an LOF(5) of 20,000 fresh rows the rule accepts; Cost: L1; "
        "Score = Val + LOF - Cost / 13.", "",
        "| fit | rows | fit s | fit + recourse s | CPU s | peak MB | Val | LOF | Cost | Score |",
        "|---|---|---|---|---|---|---|---|---|---|",
        row(big, "default"), row(small, "exact, every source"), "",
        f"Bounds: {big[key]['seconds'] / 60:.1f} min wall, {big[key]['cpu_seconds'] / 60:.1f} min of "
        f"CPU on one torch thread (<= 15: {'met' if ok_time else 'NOT met'} by the wall time), "
        f"{big[key]['peak_mb'] / 1024:.2f} GB (< 8: {'met' if ok_mem else 'NOT met'}); Score gap "
        f"{gap:+.3f} (within 0.02: {'met' if gap >= -0.02 else 'NOT met'}). One run each: a Score on "
        "1,000 rows moves by about 0.01-0.02 between seeds."])


def pairing_error_section(rows: list[dict], command: str) -> str:
    out = ["## Prefiltered pairing: error against the exact top K", "",
           f"Written by `{command}`. Machine: {machine()}; {code_state()}.", "",
           "Eq. 6 (lambda 5, K 1000) for 2,000 sources drawn at random from the synthetic table's D_h^-, "
           "each over all of its D_h^+, exact "
           "(`genre.pairing_distribution`) and prefiltered (`pairing.prefiltered_pairing`: per immutable "
           "group, n_candidates nearest in L2, re-ranked by exact L1). Recall: share of each row's exact "
           "top K that the prefilter keeps (mean, and the 1st percentile of rows); TV: total variation "
           "between the two Q's per row (mean, 99th percentile); certified: rows the L1 >= L2 bound "
           "proves exact. Seconds: for the 2,000 sources, medians of "
           f"{rows[0]['repeats']} runs alternating in one process (one torch thread).", "",
           "| N | d | D_h^- x D_h^+ | candidates | recall mean | recall 1% | TV mean | TV 99% | certified "
           "| exact s | prefilter s | speed-up |", "|---" * 12 + "|"]
    for r in rows:
        out.append(f"| {r['n']:,} | {r['d']} | {r['n_neg']:,} x {r['n_pos']:,} | {r['n_candidates']} "
                   f"| {r['recall_mean']:.4f} | {r['recall_p01']:.3f} | {r['tv_mean']:.1e} | {r['tv_p99']:.1e} "
                   f"| {r['certified']:.1%} | {r['exact_s']:.1f} | {r['prefilter_s']:.1f} "
                   f"| {r['speedup']:.1f}x |")
    return "\n".join(out)


def memory_total_gb() -> float:
    """This machine's physical memory, in GB of 1024^3 bytes (POSIX sysconf)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3


def beyond_section(runs: list[dict]) -> str:
    """"Past one machine": the largest N measured per stage, and the arithmetic of going further."""
    big = max(runs, key=lambda r: (r["n"], -r["d"]))
    n, d, p, t, rc = big["n"], big["d"], big["pairing"], big["training"], big["1,000 recourses"]
    c, settings = GenReConfig(), Settings()
    n_params = sum(q.numel() for q in RecourseTransformer(d, c).parameters())
    steps = round(c.feature_steps / d)
    q_gb = min(p["n_neg"], settings.max_sources) * c.top_k * 8 / 1e9    # int32 index + float32 CDF per partner
    per_source_ms = 1e3 * p["cpu_seconds"] / p["n_src"]
    memory_gb = memory_total_gb()
    lines = ["## Past one machine", "",
             f"Measured here (`python bench.py --scaling`, table above): every stage ran at N = {n:,} rows, "
             f"d = {d}, on {os.cpu_count()} cores and {memory_gb:.0f} GB: loading {big['loading']['seconds']:.0f} s / "
             f"{big['loading']['peak_mb'] / 1024:.1f} GB, pairing ({p['mode']}, {p['n_src']:,} sources) "
             f"{p['seconds']:.0f} s / {p['peak_mb'] / 1024:.1f} GB, training {t['seconds']:.0f} s / "
             f"{t['peak_mb'] / 1024:.1f} GB, 1,000 recourses {rc['seconds']:.1f} s / {rc['peak_mb'] / 1024:.1f} GB. "
             "What grows with N, and what to do past this machine:", "",
             f"- **Storage of Q.** Each source keeps T = {c.top_k} partners (an int32 index and a float32 "
             f"CDF, 8 kB), and at most max_sources = {settings.max_sources:,} sources are paired: {q_gb:.1f} GB "
             f"whatever N. Loading holds the table itself: {big['loading']['peak_mb'] / 1024:.1f} GB at "
             f"{n:,} rows, so this machine's {memory_gb:.0f} GB end near "
             f"{memory_gb * 1024 / big['loading']['peak_mb'] * n / 1e6:.0f}M "
             "rows, first of all stages; past that, read the CSV in row blocks into a memory-mapped array.",
             f"- **Pairing work** is sources x N+ distances: with the source count capped it grows like N+ "
             f"(here {per_source_ms:.2f} CPU ms per source over {p['n_pos']:,} targets). It is "
             "embarrassingly parallel over sources: shard them into S blocks, give every worker all of "
             f"D_h^+ ({p['n_pos'] * d * 4 / 1e6:.0f} MB here) and its block; each writes its (sources / S, T) "
             "index and probabilities, and the shards are concatenated, with no communication. At 10x "
             f"these rows the same sources would take about {10 * per_source_ms * p['n_src'] / 60000:.0f} "
             "CPU minutes here; beyond that an inverted-file index (k-means cells of D_h^+, search the "
             "nearest cells) makes each source O(sqrt(N+) + C) instead of O(N+).",
             f"- **Training** runs min({c.epochs} epochs, {c.feature_steps} / d) = {steps:,} steps of "
             f"{c.batch_size} pairs at d = {d}: flat in N. With PyTorch's DistributedDataParallel, each of "
             "W workers holds its shard of Q, draws partners locally, runs a batch of B / W, and "
             f"all-reduces the gradients each step: the default model's {n_params / 1e3:.0f}k parameters "
             f"are {n_params * 4 / 1e3:.0f} kB, so the all-reduce is cheap next to the step.",
             f"- **Recourse** is independent per row: shard the rows. The plausibility LOF (the preset "
             f"`GenReConfig.plausible()`; the default picks by h alone) is fitted once on at most "
             f"lof_rows = {settings.lof_rows:,} training positives, so it stops growing there."]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- BENCHMARKS.md

def benchmark_sections(res: dict, args) -> dict:
    """BENCHMARKS.md's sections for the parts measured in `res`: {section name: markdown}."""
    sections = {}
    command = f"`python bench.py --repeats {args.repeats} --e2e-repeats {args.e2e_repeats}" + \
        (f" --only {args.only}`" if args.only else "`")
    stamp = f"Machine: {machine()}; {command}; {code_state()}."
    if "throughput" in res:
        out = ["## GenRe throughput (synthetic data, 20,000 rows, D features)", "",
                f"Median of {args.repeats} runs. Training: milliseconds per optimiser step (batch of "
                "pairs, the loop alone), and the steps a fit runs at the config's budget (the default: at "
                "most 10000 / D; the paper's sizes: 2000 epochs) shown apart, so a change in the budget "
                "is not read as a change in speed. Candidate samples/s: 2,000 negatives x 10 samples, "
                "cached decoder. Recourses/s: the whole `GenRe.recourse()` call for 2,000 negatives (10 "
                "candidates each, h on them, the best by h).", "",
                "| config | model | D | batch | ms per step | steps a fit runs | candidate samples/s | recourses/s "
                "| steps timed |", "|---|---|---|---|---|---|---|---|---|"]
        for name, r in res["throughput"].items():
            out.append(f"| {name.split(' D=')[0]} | {r['model']} | {r['n_features']} | {r['batch']} | "
                       f"{r['ms_per_step']:.1f} | {r['fit_steps']} | {r['samples_per_s']:,.0f} | "
                       f"{r['recourses_per_s']:,.0f} | {r['steps']} |")
        sections["throughput"] = "\n".join(out + ["", stamp])
    if "pairing" in res:
        r = res["pairing"]
        sections["pairing"] = "## Pairing distribution Q for adult\n\n" + (
            f"|D_h^-| = {r['n_neg']}, |D_h^+| = {r['n_pos']}, top K = 1000, chunks of 1024 sources: "
            f"**{r['seconds']:.2f} s** (median of {r['repeats']}), peak resident memory of the "
            f"process {r['peak_mb']:.0f} MB (data, oracle and h included).") + " " + stamp
    if "end_to_end" in res:
        out = ["## `python evaluate.py --dataset D`, cold cache", "",
                f"The README's command: {', '.join(DEFAULT_METHODS)} on seed 0, 200 test negatives; median "
                f"of {args.e2e_repeats} run(s). Stage seconds are wall times recorded by evaluate.py; the total "
                "is the whole command's, start-up included.", ""]
        names = list(res["end_to_end"])
        stages = list(res["end_to_end"][names[0]]["stages"])
        out += ["| stage | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for s in stages:
            out.append(f"| {s} | " + " | ".join(f"{res['end_to_end'][n]['stages'][s]:.1f}" for n in names) + " |")
        for label, key, fmt in (("**total seconds**", "total", "{:.0f}"), ("peak memory MB", "peak_mb", "{:.0f}"),
                                ("GenRe Score", "genre_score", "{:.3f}")):
            out.append(f"| {label} | " + " | ".join(fmt.format(res['end_to_end'][n][key]) for n in names) + " |")
        sections["end-to-end"] = "\n".join(out + ["", stamp])
    if "constraints" in res:
        r = res["constraints"]
        sections["constraints"] = "## Constraints at recourse time\n\n" + (
            f"`GenRe.recourse` on adult's {r['rows']:,} test negatives (seed 0, `GenReConfig()`, one torch thread), "
            "without constraints and with the constrained study's rules (age and education-num only increase, "
            "hours-per-week within 35-60, relationship and marital-status fixed) given at recourse time, "
            f"alternately, median of {r['repeats']}: **{r['seconds']['without']:.2f} s** "
            f"({r['ms_per_recourse']['without']:.3f} ms per recourse) without, **{r['seconds']['with']:.2f} s** "
            f"({r['ms_per_recourse']['with']:.3f} ms) with: the constraints take **{r['ratio']:.2f}x** the time.") + " " + stamp
    if "flops" in res:
        r = res["flops"]
        rates = ", ".join(f"{v:.0f} GFLOP/s at {n} thread{'s' * (int(n) > 1)}" for n, v in r["attainable_gflops"].items())
        out = ["## FLOPs against the machine's limit", "",
               f"Attainable float32 rate (a 2048 x 2048 matmul, median of {r['repeats']}): {rates}. One training "
               f"step (Eq. 8 on the config's batch of random pairs, backward, fused Adam) and Algorithm 2 for "
               f"{r['n_rows']} rows x {r['n_samples']} samples (cached decoder) at D = {r['n_features']}, on one "
               "thread: FLOPs as torch.utils.flop_counter counts them (matmuls, einsums and attention where "
               "it has a formula; the softmax, norms and Adam's update count none), the median seconds, the "
               "achieved GFLOP/s and its fraction of the one-thread rate.", "",
               "| config | model | batch | dropout | step GFLOP | step s | step GFLOP/s | of the limit "
               "| sampling GFLOP | sampling s | sampling GFLOP/s | of the limit |", "|---" * 12 + "|"]
        for name, c in r["configs"].items():
            out.append(f"| {name} | {c['model']} | {c['batch']} | {c['dropout']:g} | {c['step_gflop']:.2f} | "
                       f"{c['step_seconds']:.3f} | {c['step_gflops']:.1f} | {c['step_fraction']:.0%} | "
                       f"{c['sampling_gflop']:.2f} | {c['sampling_seconds']:.3f} | {c['sampling_gflops']:.1f} | "
                       f"{c['sampling_fraction']:.0%} |")
        sections["flops"] = "\n".join(out + ["", stamp])
    if "distributed" in res:
        r = res["distributed"]
        one, two = r["processes"][1]["ms_per_step"], r["processes"][2]["ms_per_step"]
        sections["distributed"] = "\n".join([
            "## Training in several processes (distributed.py)", "",
            f"GenReConfig() on the throughput part's synthetic data (20,000 rows, D = {r['n_features']}), "
            f"{r['steps']} steps, one torch thread a process, gloo; median of {r['repeats']} runs: "
            f"{one:.1f} ms a step in 1 process, {two:.1f} ms in 2 ({one / two:.2f}x). Each step's work is "
            f"split between the processes, and the gradients ({r['n_params'] / 1e3:.0f}k parameters, "
            f"{r['n_params'] * 4 / 1e3:.0f} kB) are all-reduced once "
            "a step; across machines, launch `torchrun --nnodes=N --node_rank=R --master_addr=HOST "
            "--nproc_per_node=P distributed.py --dataset NAME --out FILE` on each.", "", stamp])
    if "threads" in res:
        r = res["threads"]
        out = ["## Threads: GenRe at 1 thread and at every core", "",
               f"`GenRe.fit` (`GenReConfig()`, {r['steps']} steps, the whole fit: pairs and training) and `GenRe.recourse` "
               f"for {r['rows']} test negatives on {r['dataset']} seed 0, at each torch thread count in turn, median of "
               f"{r['repeats']}. `python evaluate.py --threads N` sets the methods' count (default 1).", "",
               "| torch threads | fit s | ms per step | recourse s | ms per recourse | weights and recourses as at 1 thread |",
               "|---|---|---|---|---|---|"]
        for n, row in r["threads"].items():
            out.append(f"| {n} | {row['fit_s']:.1f} | {row['ms_per_step']:.1f} | {row['recourse_s']:.2f} | "
                       f"{row['ms_per_recourse']:.2f} | {'bit-identical' if row['identical'] else 'differ'} |")
        one = r["threads"][min(r["threads"])]
        out += ["", "Speed-up over one thread: " + ", ".join(
            f"{n} threads: fit {one['fit_s'] / row['fit_s']:.2f}x, recourse {one['recourse_s'] / row['recourse_s']:.2f}x"
            for n, row in r["threads"].items() if n != min(r["threads"]))]
        sections["threads"] = "\n".join(out + ["", stamp])
    return sections


def check_output_files(args) -> None:
    """Refuse, before minutes of measuring, an output file that is a folder or whose folder
    cannot be written (common.check_folder)."""
    files = [("--out", os.path.join(HERE, args.out)), ("--json", args.json)]
    files += [("--figure", os.path.join(HERE, args.figure))] if args.scaling else []
    for flag, path in files:
        if path and os.path.isdir(path):
            raise ValueError(f"{flag} {path} is a folder; name a file")
        if path:
            check_folder(os.path.dirname(path) or ".", f"{flag}'s folder")


def main(argv=None) -> int:
    """The command line (common.command_line: bad input is one line and exit code 2)."""
    return command_line(run_command, argv)


MILLION_TABLE = 1_000_000                   # rows of the synthetic table --million fits on


def run_command(argv=None) -> int:
    p = argparse.ArgumentParser(description="Measure GenRe's and the pipeline's speed and memory; "
                                            "write BENCHMARKS.md.")
    p.add_argument("--only", choices=["throughput", "pairing", "constraints", "end_to_end", "threads", "flops",
                                      "distributed"],
                   help="run one part only (threads: GenRe at 1 thread and at every core; flops: FLOPs against "
                        "the machine's attainable rate; neither is in the default parts)")
    p.add_argument("--repeats", type=positive_int, default=3, help="runs per throughput/pairing figure (median)")
    p.add_argument("--e2e-repeats", type=positive_int, default=1, help="runs per end-to-end figure (each takes minutes)")
    p.add_argument("--paper-steps", type=positive_int, default=3, help="optimiser steps timed for the paper config")
    p.add_argument("--json", help="also write the raw numbers here")
    p.add_argument("--out", default="BENCHMARKS.md", help="the report (default BENCHMARKS.md)")
    p.add_argument("--scaling", action="store_true",
                   help="scaling study on synthetic data (loading, pairing, training, 1,000 recourses at "
                        "N = 10k, 100k, 1M, d = 13, and 100k at d = 21); writes its sections of --out "
                        "and --figure (~30 minutes on 2 cores)")
    p.add_argument("--scaling-n", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                   choices=sorted({n for n, _ in SCALING}),
                   help="the N of --scaling to run (default all three)")
    p.add_argument("--figure", default=os.path.join("figures", "scaling.png"),
                   help="the --scaling figure (default figures/scaling.png)")
    p.add_argument("--million", action="store_true",
                   help="GenRe.fit with the prefiltered pairing on the 1M-row synthetic table plus 1,000 "
                        "recourses (time, peak memory, Score) against the exact pairing on 100k rows")
    p.add_argument("--million-rows", type=positive_int, default=MILLION_TABLE,
                   help=f"rows of the --million fit (at most {MILLION_TABLE:,})")
    p.add_argument("--subsample", type=positive_int, default=100_000,
                   help=f"rows of --million's exact fit (at most {MILLION_TABLE:,})")
    p.add_argument("--pairing-error", action="store_true",
                   help="recall and total variation of pairing.prefiltered_pairing against the exact "
                        "top K, and its speed-up, for 2,000 sources of the synthetic table (N = 100k "
                        "and 1M at d = 13, 100k at d = 21)")
    p.add_argument("--n-candidates", type=positive_int, default=2048, help="the prefilter's candidates per source")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads in --pairing-error and each --scaling/--million child (default 1: on this shared "
                        "2-core machine, 2 threads ran GenRe's training 10x slower than 1)")
    args = p.parse_args(argv)
    for flag, rows in (("--million-rows", args.million_rows), ("--subsample", args.subsample)):
        if rows > MILLION_TABLE:
            p.error(f"{flag} must be at most {MILLION_TABLE:,} (the synthetic table's rows), got {rows:,}")
    check_output_files(args)                                     # before minutes of measuring
    out_path = os.path.join(HERE, args.out)
    command = "python bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    studies = args.scaling or args.million or args.pairing_error
    if args.pairing_error:
        torch.set_num_threads(args.threads)
        rows = [pairing_error(n, d, args.n_candidates, args.repeats) for n, d in ERROR_TABLES]
        write_section(out_path, "pairing-error", pairing_error_section(rows, command))
        print(json.dumps(rows, indent=1))
    if args.million:
        load_before = os.getloadavg()[0]
        res = million(args.million_rows, args.subsample, args.threads)
        write_section(out_path, "million", million_section(res, command, load_before))
        print(json.dumps(res, indent=1))
    if args.scaling:
        def report_scaling(runs):
            write_section(out_path, "scaling", scaling_section(runs, command))
            write_section(out_path, "past-one-machine", beyond_section(runs))
            plot_scaling(runs, os.path.join(HERE, args.figure))
            print(json.dumps(runs), flush=True)                  # every run so far, to redo the report
        scaling(set(args.scaling_n), args.threads, report_scaling)
    if studies and not args.only:
        return 0

    res = {}
    parts = [args.only] if args.only else ["throughput", "pairing", "constraints", "end_to_end"]
    if "throughput" in parts:
        print("throughput ...", flush=True)
        res["throughput"] = {}
        for D in THROUGHPUT_FEATURES:
            res["throughput"][f"default D={D}"] = median_throughput(False, 50, args.repeats, D)
            res["throughput"][f"paper() D={D}"] = median_throughput(True, args.paper_steps, args.repeats, D)
    if "pairing" in parts:
        print("pairing ...", flush=True)
        res["pairing"] = pairing(os.path.join(HERE, "cache"), args.repeats)
    if "constraints" in parts:
        print("constraints at recourse time ...", flush=True)
        res["constraints"] = constraint_overhead(os.path.join(HERE, "cache"), max(args.repeats, 5))
    if "threads" in parts:
        print("threads ...", flush=True)
        res["threads"] = thread_speed(os.path.join(HERE, "cache"), args.repeats)
    if "flops" in parts:
        print("flops ...", flush=True)
        res["flops"] = flop_rates(args.repeats)
    if "distributed" in parts:
        print("distributed ...", flush=True)
        res["distributed"] = data_parallel_speed(args.repeats)
    if "end_to_end" in parts:
        res["end_to_end"] = {}
        for d in ("adult", "compas", "heloc"):
            print(f"end to end: {d} ...", flush=True)
            res["end_to_end"][d] = end_to_end(d, args.e2e_repeats)
    if args.json:
        atomic_write(args.json, lambda f: f.write(json.dumps(res, indent=2).encode()))
    for name, text in benchmark_sections(res, args).items():   # each part replaces its own section
        write_section(out_path, name, text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
