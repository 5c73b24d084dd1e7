"""distributed.py: Algorithm 1 over 2 local processes (gloo) takes the steps one process
takes on the same global batch: the same validation losses, and the same parameters within
float tolerance. Adam divides each gradient by its own running size, so a parameter whose
gradient is rounding noise (summed in another order across processes) may move by up to lr
a step either way: the parameters are compared within lr, the losses within 1e-5."""
import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distributed import DataParallelGenRe
from engine import Settings
from genre import GenRe
from test_genre import tiny_config, toy_data

CFG = tiny_config(steps=6, batch_size=61)       # an odd batch: the two processes' shares differ


def fit_in_process(rank, world, store, out):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        X, y, h, imm, cat = toy_data()
        model = DataParallelGenRe(CFG, random_state=3, verbose=False, settings=Settings(eval_every=2))
        model.fit(X, y, h, immutable=imm, categorical=cat)
        if rank == 0:
            torch.save({"state": model.model_.state_dict(), "history": model.history_}, out)
    finally:
        dist.destroy_process_group()


def test_two_processes_take_the_steps_of_one(tmp_path):
    out = tmp_path / "two.pt"
    mp.spawn(fit_in_process, args=(2, str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    two = torch.load(out, weights_only=False)
    X, y, h, imm, cat = toy_data()
    one = GenRe(CFG, random_state=3, verbose=False, settings=Settings(eval_every=2)).fit(X, y, h, immutable=imm,
                                                                                        categorical=cat)
    for name, value in one.model_.state_dict().items():
        torch.testing.assert_close(two["state"][name], value, rtol=0, atol=CFG.lr, msg=name)
    np.testing.assert_allclose([r["val_loss"] for r in two["history"]], [r["val_loss"] for r in one.history_],
                               rtol=1e-5)
    assert len(two["history"]) == 3
    early = GenRe(tiny_config(steps=1, batch_size=61), random_state=3, verbose=False).fit(
        X, y, h, immutable=imm, categorical=cat)                              # the steps did move the weights
    assert any(not torch.allclose(early.model_.state_dict()[k], v) for k, v in two["state"].items())
