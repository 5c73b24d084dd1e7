"""Which CPU kernels a seed's numbers depend on: one seed's benchmark under each kernel path.

    python kernel_paths.py                     # compas and adult, seed 0: about 25 minutes on 2 cores
    python kernel_paths.py --datasets compas   # one data set
    python kernel_paths.py --publish           # results/kernel_paths.json and BENCHMARKS.md

torch (its own ATen kernels, oneDNN and MKL) and numpy's OpenBLAS each pick vector kernels for
the CPU when they load: AVX-512 where the CPU has it, else AVX2, and so on. Environment variables
read at load time force another path. A different path can sum a float in another order, and so
move its last bits. Each path below runs in a fresh process, from an empty cache:

  end to end:  GenRe (the paper's method) and NNR (D_h^+) on the seed, as `evaluate.py` runs them;
  by stage:    each stage's output as a hash (the oracle's probabilities, the drawn labels, h's
               probabilities, GenRe's trained weights, its recourses, the metric's LOF verdicts),
               and, given the machine's own path's inputs, each stage rerun alone, so a stage that
               moves is told apart from one that only receives moved inputs.

It writes runs/kernel_paths.json (or --out); with --publish, instead, results/kernel_paths.json
(the per-metric spread across paths that tests/test_reproducible.py allows when it compares a
cold run with the published numbers) and BENCHMARKS.md's kernel-paths section.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import evaluate
from common import atomic_write, provenance, torch_threads, write_section
from datasets import load
from tables import METRICS

HERE = os.path.dirname(os.path.abspath(__file__))

# Each path: the environment variables that force it (read when torch and numpy load).
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell"}
PATHS = {
    "machine": {},                                            # what the libraries pick for this CPU
    "aten_default": {"ATEN_CPU_CAPABILITY": "default"},       # ATen without vector kernels
    "aten_avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "aten_avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "onednn_avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "mkl_cbwr_avx2": {"MKL_CBWR": "AVX2"},
    "openblas_haswell": {"OPENBLAS_CORETYPE": "Haswell"},
    "all_avx2": AVX2,                                         # every library held to AVX2 at once
}
VARIABLES = sorted({k for env in PATHS.values() for k in env})
METHODS = ("genre", "nnr_dhplus")
STAGES = ("oracle", "labels", "h", "genre_weights", "recourse", "lof_verdicts")


def digest(*arrays) -> str:
    """A short hash of arrays' bytes: equal hashes, equal arrays bit for bit."""
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:12]


def weights(genre) -> str:
    return digest(*[p.detach().numpy() for p in genre.model_.state_dict().values()])


# ----------------------------------------------------------------------------- one path (a child process)

def run_path(dataset: str, seed: int, work: str, base: str | None) -> dict:
    """The seed under the kernel path this process was started with. `work` is this path's
    folder; `base`, when given, the machine path's folder, whose inputs each stage reruns from."""
    cache = os.path.join(work, "cache")
    result = evaluate.run_benchmark(dataset, list(METHODS), [seed], 200, cache, verbose=False)
    metrics = {m: {k: result["methods"][m][k] for k in METRICS} for m in METHODS}
    bench = evaluate.prepare(dataset, seed, cache, verbose=False)       # loaded from the cache just written
    with torch_threads(1):
        genre = evaluate.fit_genre(bench, verbose=False)
        X_neg = evaluate.pick_test_negatives(bench, 200)
        X_plus = genre.recourse(X_neg)
        lof = evaluate.fit_metric_lof(bench)
    np.save(os.path.join(work, "X_neg.npy"), X_neg)
    np.save(os.path.join(work, "X_plus.npy"), X_plus)
    ds = bench.ds
    stages = {"oracle": digest(evaluate.oracle_proba(bench.oracle, ds.X_all)),
              "labels": digest(ds.y_train, ds.y_test),
              "h": digest(bench.h.predict_proba(ds.X_all)),
              "genre_weights": weights(genre), "recourse": digest(X_plus),
              "lof_verdicts": digest(lof.predict(X_plus))}
    alone = rerun_alone(dataset, seed, base) if base else None
    return {"metrics": metrics, "stages": stages, "alone": alone,
            "capability": torch.backends.cpu.get_cpu_capability()}


def rerun_alone(dataset: str, seed: int, base: str) -> dict:
    """Each stage rerun on the machine path's inputs, under this process's path: the oracle
    from the data, h from the machine path's drawn labels, GenRe's training from its h, its
    sampling from its trained model, the LOF from its oracle on its recourses."""
    scratch = tempfile.mkdtemp(dir=base)                           # the base cache, read only
    try:
        for name in os.listdir(os.path.join(base, "cache")):
            shutil.copy(os.path.join(base, "cache", name), scratch)
        bench = evaluate.prepare(dataset, seed, scratch, verbose=False)  # the machine path's oracle and h
        X_neg, X_plus = (np.load(os.path.join(base, f"{n}.npy")) for n in ("X_neg", "X_plus"))
        ds = bench.ds
        with torch_threads(1):
            oracle = evaluate.fit_oracle(load(dataset), seed)
            h = evaluate.load_h(evaluate.fit_h(ds, seed, verbose=False), ds.n_features)
            trained = evaluate.fit_genre(dataclasses.replace(bench, cache_dir=None), verbose=False)
            sampled = evaluate.fit_genre(bench, verbose=False).recourse(X_neg)   # the cached (machine) model
            lof = evaluate.fit_metric_lof(bench)
        return {"oracle": digest(evaluate.oracle_proba(oracle, ds.X_all)), "h": digest(h.predict_proba(ds.X_all)),
                "genre_weights": weights(trained), "recourse": digest(sampled),
                "lof_verdicts": digest(lof.predict(X_plus))}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ----------------------------------------------------------------------------- the study (the parent)

def child_env(path: str) -> dict:
    """The environment of a child on `path`: the study's variables cleared, then the path's set;
    one thread for every library, as the benchmark runs."""
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    return {**env, **PATHS[path], "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def launch(path: str, dataset: str, seed: int, work: str, base: str | None) -> subprocess.Popen:
    args = [sys.executable, os.path.abspath(__file__), "--child", path, "--datasets", dataset,
            "--seed", str(seed), "--work", work] + (["--base", base] if base else [])
    return subprocess.Popen(args, env=child_env(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, what: str) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed: {(err.strip().splitlines() or ['?'])[-1]}")
    return json.loads(out.strip().splitlines()[-1])


def study(datasets, seed: int, jobs: int, root: str) -> dict:
    """Every path on every data set: the machine path first (its folder is every other's base),
    then the others, `jobs` at a time."""
    out, t0 = {}, time.time()
    for dataset in datasets:
        folder = lambda p: os.path.join(root, f"{dataset}_{p}")
        for p in PATHS:
            os.makedirs(folder(p), exist_ok=True)
        print(f"[{dataset} seed {seed}] machine path ...", flush=True)
        runs = {"machine": finish(launch("machine", dataset, seed, folder("machine"), None), "machine")}
        others = [p for p in PATHS if p != "machine"]
        for i in range(0, len(others), jobs):
            batch = others[i:i + jobs]
            procs = {p: launch(p, dataset, seed, folder(p), folder("machine")) for p in batch}
            for p, proc in procs.items():
                runs[p] = finish(proc, f"{dataset} {p}")
            done = i + len(batch)
            elapsed = time.time() - t0
            print(f"[{dataset} seed {seed}] {done}/{len(others)} paths ({', '.join(batch)}), "
                  f"{elapsed:.0f}s elapsed", flush=True)
        out[dataset] = runs
    return out


def spread(runs: dict) -> dict:
    """Per metric, the largest difference between any path and the machine path, over the
    data sets and methods: how far a seed's published number can move with the kernels."""
    worst = {k: 0.0 for k in METRICS}
    for by_path in runs.values():
        for run in by_path.values():
            for m in METHODS:
                for k in METRICS:
                    worst[k] = max(worst[k], abs(run["metrics"][m][k] - by_path["machine"]["metrics"][m][k]))
    return worst


def table(runs: dict, seed: int) -> str:
    """Markdown: per data set and path, each method's Cost / Val / LOF / Score, and which
    stages moved (end to end, and rerun alone on the machine path's inputs)."""
    lines = []
    for dataset, by_path in runs.items():
        base = by_path["machine"]
        lines += [f"{dataset}, seed {seed} (torch picks {base['capability']} here)", "",
                  "| path | " + " | ".join(f"{m} Cost / Val / LOF / Score" for m in METHODS)
                  + " | stages that differ | stages that move alone |",
                  "|---|" + "---|" * (len(METHODS) + 2)]
        for path, run in by_path.items():
            cells = [" / ".join(f"{run['metrics'][m][k]:.4f}" for k in METRICS) for m in METHODS]
            moved = [s for s in STAGES if run["stages"][s] != base["stages"][s]] or ["none"]
            alone = "-" if run["alone"] is None else ", ".join(
                [s for s, v in run["alone"].items() if v != base["stages"][s]] or ["none"])
            env = " ".join(f"{k}={v}" for k, v in PATHS[path].items()) or "(none)"
            lines.append(f"| {path} `{env}` | " + " | ".join(cells) + f" | {', '.join(moved)} | {alone} |")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="One seed's benchmark under each CPU kernel path: which stages "
                                            "move, and by how much the published numbers can.")
    p.add_argument("--datasets", nargs="+", default=["compas", "adult"], choices=["adult", "compas", "heloc"])
    p.add_argument("--seed", type=int, default=0, help="the seed (default 0)")
    p.add_argument("--jobs", type=int, default=2, help="paths run at once (default 2, one per core)")
    p.add_argument("--out", default=os.path.join(HERE, "runs", "kernel_paths.json"),
                   help="the JSON (default runs/kernel_paths.json, git-ignored)")
    p.add_argument("--publish", action="store_true",
                   help="write results/kernel_paths.json (the spread the tests allow) and BENCHMARKS.md's section "
                        "instead of --out")
    p.add_argument("--child", choices=list(PATHS), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seed < 0 or args.jobs < 1:
        p.error("--seed must be 0 or more and --jobs at least 1")
    return args


def findings(runs: dict) -> str:
    """What the runs show, in words: the variables whose path moves a stage rerun alone on the
    machine path's inputs, and the stages no path moves."""
    moves = {}
    for by_path in runs.values():
        base = by_path["machine"]["stages"]
        for path, run in by_path.items():
            for stage, value in (run["alone"] or {}).items():
                if value != base[stage]:
                    moves.setdefault(stage, set()).add(path)
    still = [s for s in STAGES if s not in moves and s != "labels"]
    said = "; ".join(f"{s}: moved by {', '.join(sorted(p))}" for s, p in moves.items()) or "none"
    return (f"Stages that move when rerun alone on the machine path's inputs: {said}. "
            f"Never moved alone: {', '.join(still) or 'none'}.")


def section(result: dict, command: str) -> str:
    """BENCHMARKS.md's section: the table, what moves, and the spread the tests allow."""
    worst = ", ".join(f"{k} {v:.4f}" for k, v in result["spread"].items())
    p = result["provenance"]
    return "\n".join([
        "## Kernel paths: which CPU kernels a seed's numbers depend on", "",
        f"`{command}`: seed {result['seed']}, GenRe (the paper's method) and NNR (D_h^+), each path in a fresh "
        "process from an empty cache, one thread. A stage's hash differs when any bit of its output does; "
        "rerun alone, each stage starts from the machine path's inputs.", "",
        result["table"], findings(result["runs"]), "",
        f"Largest difference from the machine path, per metric, over the data sets and methods: {worst}. "
        "`tests/test_reproducible.py` allows exactly this when it compares a cold run with results/.", "",
        f"Machine: {p['cpu']}; torch {p['versions']['torch']}, numpy {p['versions']['numpy']}, "
        f"commit {str(p['commit'])[:10]}{' with uncommitted changes' if p['dirty'] else ''}."])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_path(args.datasets[0], args.seed, args.work, args.base)))
        return 0
    root = tempfile.mkdtemp(prefix="kernel_paths-")
    try:
        runs = study(args.datasets, args.seed, args.jobs, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {"seed": args.seed, "methods": list(METHODS), "paths": PATHS, "runs": runs,
              "spread": spread(runs), "table": table(runs, args.seed),
              "provenance": provenance()}
    text = json.dumps(result, indent=2).encode()
    out = os.path.join(HERE, "results", "kernel_paths.json") if args.publish else args.out
    atomic_write(out, lambda f: f.write(text))
    print(f"written: {out}")
    if args.publish:
        command = "python kernel_paths.py --publish" + (f" --datasets {' '.join(args.datasets)}"
                                                        if args.datasets != ["compas", "adult"] else "")
        write_section(os.path.join(HERE, "BENCHMARKS.md"), "kernel-paths", section(result, command))
        print("written: BENCHMARKS.md (its kernel-paths section)")
    print(result["table"])
    print(findings(runs))
    print("spread (largest |path - machine|):", json.dumps(result["spread"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
