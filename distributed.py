"""GenRe's training past one process: PyTorch's DistributedDataParallel, launched by torchrun.

    torchrun --nproc_per_node=2 distributed.py --dataset compas --seed 0 --out runs/genre_compas.pt
    torchrun --nnodes=2 --node_rank=R --master_addr=HOST --nproc_per_node=N distributed.py ...   # machines

Every process holds the whole of Q (the pairs, 8 bytes a partner) and draws the same
partners from the same seeded generator, so each minibatch is the same as in one process;
process r trains on rows r, r + W, r + 2W, ... of it (W processes), and the gradients are
summed across processes, each weighted by its share of the batch: every step is the step
one process takes on the whole batch (tests/test_distributed.py: the same parameters
within float tolerance). gloo on the CPU, nccl on CUDA (one GPU a process). The model is
saved by process 0 and loads as any GenRe (GenRe.load).

What it buys: the step's work divided by W, against one all-reduce of the gradients a step
(the default model's 86k parameters at d = 13: 344 kB). BENCHMARKS.md has what 2 processes
on 2 cores measured against 1 (`python bench.py --only distributed`).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import engine
from common import command_line, non_negative_int
from datasets import BENCHMARKS
from evaluate import CACHE_DIR, fit_one, make_method, prepare
from genre import GenRe, GenReConfig, train_recourse_model


class Shard:
    """A process's part of each minibatch: indexing with the batch's rows i (of the whole
    data) gives rows i[rank::world], and records the share they are of the batch, which
    the gradient hook weights by."""

    def __init__(self, data: torch.Tensor, rank: int, world: int, share: dict):
        self.data, self.rank, self.world, self.share = data, rank, world, share

    def __len__(self):
        return len(self.data)

    @property
    def shape(self):
        return self.data.shape

    def __getitem__(self, i):
        mine = i[self.rank::self.world]
        self.share["weight"] = len(mine) / len(i)
        return self.data[mine]


class ShardedPairs:
    """genre.Pairs as one process sees it: the same sources and the same partners drawn, each
    minibatch's rows cut to this process's part (Shard)."""

    def __init__(self, pairs, rank: int, world: int, share: dict):
        self.pairs, self.rank, self.world, self.share = pairs, rank, world, share
        self.x = Shard(pairs.x, rank, world, share)

    def draw(self, generator):
        return Shard(self.pairs.draw(generator), self.rank, self.world, self.share)


def weighted_sum(share: dict):
    """A DistributedDataParallel communication hook: each process's gradient (of the mean loss
    over its rows) times its share of the batch, summed over processes: the gradient of the
    mean loss over the whole batch, as one process computes it."""
    def hook(state, bucket):
        grad = bucket.buffer().mul_(share["weight"])
        return dist.all_reduce(grad, async_op=True).get_future().then(lambda fut: fut.value()[0])
    return hook


class DataParallelGenRe(GenRe):
    """GenRe whose Algorithm 1 runs over the processes of torch.distributed (initialised by
    the caller); everything else is GenRe's. Give verbose=True to process 0 only."""

    def train_model(self, train, log):
        rank, world = dist.get_rank(), dist.get_world_size()
        share = {"weight": 1.0}
        device_ids = [self.device_.index] if self.device_.type == "cuda" else None
        model = DistributedDataParallel(self.model_, device_ids=device_ids)
        model.register_comm_hook(None, weighted_sum(share))
        with engine.threads(self):
            train_recourse_model(model, ShardedPairs(train, rank, world, share), self.bins_, self.cfg_,
                                 self.generator_, DataParallelLog(log))


class DataParallelLog:
    """engine.TrainingLog seen through DistributedDataParallel: the module's own parameters
    checked and kept, so the kept state loads into a plain RecourseTransformer."""

    def __init__(self, log):
        self.log = log

    def step(self, model, step, total, loss):
        self.log.step(model.module, step, total, loss)

    def restore_best(self, model):
        self.log.restore_best(model.module)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Launch with torchrun (torch.distributed.run); see the module docstring.")
    p.add_argument("--dataset", choices=BENCHMARKS, required=True)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--out", required=True, help="where process 0 saves the fitted GenRe (GenRe.load reads it)")
    p.add_argument("--cache", default=CACHE_DIR, help="the oracle's and h's cache (evaluate.prepare)")
    p.add_argument("--steps", type=non_negative_int, default=None, help="exactly this many steps (default: the config's)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        rank = dist.get_rank()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        bench = prepare(args.dataset, args.seed, args.cache, verbose=rank == 0)
        params = make_method("genre", args.seed, verbose=rank == 0).get_params()   # the benchmark's GenRe
        if args.steps:
            params["cfg"] = dataclasses.replace(params["cfg"] or GenReConfig(), steps=args.steps)
        fitted = fit_one(DataParallelGenRe(**params), bench)
        if rank == 0:
            fitted.save(args.out)
            print(f"saved {args.out}", flush=True)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(command_line(main))
