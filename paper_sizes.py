"""The paper's own recipe on a GPU: GenRe at Table 9's sizes (16 + 16 layers, 8 heads, dropout
0.1), C.2.4's learning rate 1e-4 and batch (16384 on adult, else 2048), for the paper's 2,000
epochs, on adult, compas and heloc, seeds 0-2, with the benchmark's protocol.

    python paper_sizes.py                    # on a CUDA device; writes runs/paper_sizes.json
    python paper_sizes.py --publish          # ... and results/paper_sizes.json
    python paper_sizes.py --datasets compas --seeds 0 --allow-cpu     # a CPU, if you must

On this project's 2-core CPU those sizes cost about 8 s a step (BENCHMARKS.md's FLOPs
section), 10 to 25 hours a data set, so the script refuses to start without CUDA unless told.
Each row records the device it ran on. Until a GPU has run it, results/ holds no such row.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from common import atomic_write, command_line, non_negative_int, provenance
from evaluate import CACHE_DIR, PUBLISHED, RUNS_DIR, genre_configs, run_benchmark

DATASETS = ("adult", "compas", "heloc")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--seeds", nargs="+", type=non_negative_int, default=[0, 1, 2])
    p.add_argument("--n-test", type=non_negative_int, default=200)
    p.add_argument("--cache", default=CACHE_DIR)
    p.add_argument("--publish", action="store_true", help="also write results/paper_sizes.json")
    p.add_argument("--allow-cpu", action="store_true", help="run without CUDA (about 8 s a step on 2 cores)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        raise ValueError("no CUDA device: Table 9's sizes for 2,000 epochs take 10 to 25 hours a data set on a "
                         "2-core CPU; run where torch.cuda.is_available(), or pass --allow-cpu")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    out = {"device": device, "seeds": args.seeds, "n_test": args.n_test, "datasets": {}}
    for name in args.datasets:
        t0 = time.time()
        print(f"{name}: GenRe at Table 9's sizes, 2,000 epochs, on {device} ...", flush=True)
        res = run_benchmark(name, ["genre"], args.seeds, args.n_test, args.cache,
                            genre_configs=genre_configs(paper_sizes=True, dataset=name))
        out["datasets"][name] = {**res["methods"]["genre"], "config": res["genre_configs"]["genre"],
                                 "seconds": time.time() - t0}
        print(f"{name}: Score {res['methods']['genre']['score']:.3f} in {time.time() - t0:.0f} s", flush=True)
    out["provenance"] = provenance()
    text = json.dumps(out, indent=2).encode()
    for folder in [RUNS_DIR] + ([PUBLISHED] if args.publish else []):
        atomic_write(os.path.join(folder, "paper_sizes.json"), lambda f: f.write(text))
        print(f"written: {os.path.join(folder, 'paper_sizes.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(command_line(main))
