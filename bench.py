"""Speed and memory of the pipeline, measured and written to BENCHMARKS.md.

    python bench.py                      # everything (~15 minutes on a 2-core CPU)
    python bench.py --only throughput --json gpu.json    # just GenRe's throughput (as run on a GPU)

What is measured (each a median over --repeats runs unless said otherwise):
  1. GenRe training throughput, pairs per second, default and paper() configs;
  2. sampling throughput, samples per second, 2,000 negatives x 10 samples;
  3. building adult's pairing distribution Q: seconds and peak resident memory;
  4. `python evaluate.py --dataset D --seeds 0` end to end from a cold cache, per
     data set: seconds per stage and peak resident memory, with GenRe's Score.
Stages 3 and 4 run in child processes, so their peak memory is their own.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def machine() -> str:
    """One line naming the machine: CPU model, cores, torch version, device."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), device: {device}")


# ----------------------------------------------------------------------------- 1-2. throughput

def throughput(paper: bool, steps: int, n_rows: int = 20000, n_features: int = 13,
               n_neg: int = 2000, seed: int = 0) -> tuple[float, float]:
    """GenRe on random data labelled by a fixed linear h: (training pairs/s, samples/s).

    Training time is the optimiser loop alone (the fit's history), pairs = steps x batch.
    Sampling draws 10 recourses for each of n_neg rows with the fast (cached) decoder.
    """
    from genre import GenRe, GenReConfig
    rng = np.random.default_rng(seed)
    X = rng.random((n_rows, n_features)).astype(np.float32)
    w = torch.from_numpy(rng.normal(size=n_features).astype(np.float32))

    class LinearH:                                    # h(x) = sigmoid(5 (x - 1/2) . w)
        def predict_proba(self, X):
            return torch.sigmoid(5 * (torch.as_tensor(X) - 0.5) @ w).numpy()

    y = (rng.random(n_rows) < LinearH().predict_proba(X)).astype(int)
    cfg = GenReConfig.paper() if paper else GenReConfig()
    cfg.steps, cfg.feature_steps, cfg.eval_every = steps, None, steps
    model = GenRe(cfg, random_state=seed, verbose=False).fit(X, y, LinearH())
    train_seconds = model.history_[-1]["seconds"]
    model.sample(X[:10])                                                    # warm up
    t0 = time.time()
    model.sample(X[:n_neg])
    return (steps * min(cfg.batch_size, model.n_sources_) / train_seconds,
            n_neg * cfg.n_samples / (time.time() - t0))


def model_size(paper: bool) -> str:
    """The timed config's transformer, in words (recorded beside its throughput)."""
    from genre import GenReConfig
    c = GenReConfig.paper() if paper else GenReConfig()
    return f"{c.n_enc_layers}+{c.n_dec_layers} layers, {c.n_heads} head{'s' * (c.n_heads > 1)}, d_model {c.d_model}"


def median_throughput(paper: bool, steps: int, repeats: int, n_features: int) -> dict:
    runs = [throughput(paper, steps, n_features=n_features, seed=r) for r in range(repeats)]
    return {"pairs_per_s": statistics.median(r[0] for r in runs),
            "samples_per_s": statistics.median(r[1] for r in runs),
            "steps": steps, "n_features": n_features, "repeats": repeats, "machine": machine(),
            "model": model_size(paper)}


# GPU files written before bench.py recorded the model: the CPU default then had 2 heads.
OLD_DEFAULT = "2+2 layers, 2 heads, d_model 32 (the default config of the time)"


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
neg, pos = genre.training_sets(ds.y_train, b.h.predict_proba(ds.X_train), cfg.gamma, cfg.negatives)
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
    """`python evaluate.py --dataset D --seeds 0` from an empty cache: stage seconds and peak memory."""
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            argv = ["evaluate.py", "--dataset", dataset, "--seeds", "0", "--quiet",
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


# ----------------------------------------------------------------------------- BENCHMARKS.md

def report(res: dict, gpu: dict | None, args) -> str:
    out = ["# Benchmarks", "", "Written by `python bench.py` "
           f"(`--repeats {args.repeats} --e2e-repeats {args.e2e_repeats}`); do not edit by hand.", "",
           f"Machine: {machine()}.", ""]
    if "throughput" in res:
        out += ["## GenRe throughput (synthetic data, 20,000 rows, D features)", "",
                f"Median of {args.repeats} runs. Training: pairs per second of the optimiser loop "
                "(steps x batch / loop time). Sampling: 2,000 negatives x 10 samples, cached decoder.", "",
                "| config | model | D | training pairs/s | samples/s | steps timed |", "|---|---|---|---|---|---|"]
        rows = list(res["throughput"].items()) + [(f"{k}, GPU", r) for k, r in (gpu or {}).items()]
        for name, r in rows:
            model = r.get("model", model_size(True) if name.startswith("paper") else OLD_DEFAULT)
            out.append(f"| {name.split(' D=')[0]} | {model} | {r.get('n_features', 13)} | {r['pairs_per_s']:,.0f} "
                       f"| {r['samples_per_s']:,.0f} | {r['steps']} |")
        if gpu:
            out += ["", f"GPU rows: {next(iter(gpu.values()))['machine']}; measured by "
                    "`python bench.py --only throughput --json gpu.json` on that machine."]
        out.append("")
    if "pairing" in res:
        r = res["pairing"]
        out += ["## Pairing distribution Q for adult", "",
                f"|D_h^-| = {r['n_neg']}, |D_h^+| = {r['n_pos']}, top K = 1000, chunks of 1024 sources: "
                f"**{r['seconds']:.2f} s** (median of {r['repeats']}), peak resident memory of the "
                f"process {r['peak_mb']:.0f} MB (data, oracle and h included).", ""]
    if "end_to_end" in res:
        out += ["## `python evaluate.py --dataset D --seeds 0`, cold cache", "",
                f"All five methods, 200 test negatives; median of {args.e2e_repeats} run(s). "
                "Stage seconds are wall times recorded by evaluate.py.", ""]
        names = list(res["end_to_end"])
        stages = list(res["end_to_end"][names[0]]["stages"])
        out += ["| stage | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for s in stages:
            out.append(f"| {s} | " + " | ".join(f"{res['end_to_end'][n]['stages'][s]:.1f}" for n in names) + " |")
        for label, key, fmt in (("**total seconds**", "total", "{:.0f}"), ("peak memory MB", "peak_mb", "{:.0f}"),
                                ("GenRe Score", "genre_score", "{:.3f}")):
            out.append(f"| {label} | " + " | ".join(fmt.format(res['end_to_end'][n][key]) for n in names) + " |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Measure GenRe's and the pipeline's speed and memory; "
                                            "write BENCHMARKS.md.")
    p.add_argument("--only", choices=["throughput", "pairing", "end_to_end"], help="run one part only")
    p.add_argument("--repeats", type=int, default=3, help="runs per throughput/pairing figure (median)")
    p.add_argument("--e2e-repeats", type=int, default=1, help="runs per end-to-end figure (each takes minutes)")
    p.add_argument("--paper-steps", type=int, default=3, help="optimiser steps timed for the paper config")
    p.add_argument("--json", help="also write the raw numbers here")
    p.add_argument("--gpu-json", help="a --json file made on a GPU machine, added to the throughput table")
    p.add_argument("--out", default="BENCHMARKS.md", help="the report (default BENCHMARKS.md)")
    args = p.parse_args(argv)

    res = {}
    parts = [args.only] if args.only else ["throughput", "pairing", "end_to_end"]
    if "throughput" in parts:
        print("throughput ...", flush=True)
        res["throughput"] = {}
        for D in THROUGHPUT_FEATURES:
            res["throughput"][f"default D={D}"] = median_throughput(False, 50, args.repeats, D)
            res["throughput"][f"paper() D={D}"] = median_throughput(True, args.paper_steps, args.repeats, D)
    if "pairing" in parts:
        print("pairing ...", flush=True)
        res["pairing"] = pairing(os.path.join(HERE, "cache"), args.repeats)
    if "end_to_end" in parts:
        res["end_to_end"] = {}
        for d in ("adult", "compas", "heloc"):
            print(f"end to end: {d} ...", flush=True)
            res["end_to_end"][d] = end_to_end(d, args.e2e_repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    gpu = None
    if args.gpu_json:
        with open(args.gpu_json) as f:
            gpu = json.load(f)["throughput"]
    text = report(res, gpu, args)
    if not args.only:
        from common import atomic_write
        atomic_write(os.path.join(HERE, args.out), lambda f: f.write(text.encode()))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
