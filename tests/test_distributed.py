from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import skelgraph.train.precision as precision
from skelgraph.clip import SkeletonClip
from skelgraph.data import write_skeleton_folder
from skelgraph.train.config import load_config
from skelgraph.train.distributed import (
    DistContext,
    all_reduce_sum,
    autocast_dtype,
    cleanup,
    gather_by_index,
    init_distributed,
    make_sampler,
    wrap_model,
)
from skelgraph.train.precision import Calibration
from skelgraph.train.run import prepare

WORLD_SIZE = 2
#: one epoch of a tiny InfoGCN++ on 10 random clips
TRAINER_OVERRIDES = [
    "epochs=1",
    "data.window=8",
    "model.args.channels=8",
    "model.args.depth=1",
    "model.args.head_channels=8",
    "model.args.decoder_channels=8",
    "batch_size=2",
    "data.val_fraction=0.4",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join(rank: int, port: int) -> DistContext:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
    )
    torch.set_num_threads(1)
    return init_distributed("cpu")


def _not_on_rank_1(*args, **kwargs):
    raise AssertionError("only rank 0 decides the precision")


def worker(rank: int, port: int, out_dir: str) -> None:
    """One rank of the job: a DDP step, a gather over a padded sampler and a Trainer epoch."""
    ctx = join(rank, port)
    try:
        torch.manual_seed(100 + rank)  # different initial weights: DDP must broadcast rank 0's
        model = wrap_model(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), ctx)
        opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        x = torch.randn(4, 6)  # different data on every rank
        y = torch.randint(0, 3, (4,))
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        params = torch.cat([p.detach().flatten() for p in model.parameters()])

        dataset = list(range(5))  # 5 samples on 2 ranks: the sampler pads one duplicate
        indices = np.array(list(make_sampler(dataset, ctx, shuffle=False)))
        unique, merged = gather_by_index(indices, {"value": indices * 10.0}, ctx)
        total = all_reduce_sum(torch.tensor([1.0]), ctx)

        # rank 0 decides the precision and every rank takes its choice: here a choice that
        # rank 0 finds and rank 1 would fail to find
        if rank == 0:
            precision._cached_or_measured = lambda *args, train, **kwargs: Calibration(
                "bf16", {"fp32": 2.0, "bf16": 1.0}, train, [], "cpu"
            )
        else:
            precision._cached_or_measured = _not_on_rank_1
        config = load_config("infogcn2_small", TRAINER_OVERRIDES)
        data = os.path.join(out_dir, "data")
        trainer, _ = prepare(config, data, os.path.join(out_dir, "work"), ctx=ctx, progress=False)
        trainer.fit()
        result = {
            "params": params,
            "shard": indices,
            "unique": unique,
            "value": merged["value"],
            "total": total,
            "trained": torch.cat([p.detach().flatten() for p in trainer.module.parameters()]),
            "val": trainer.history[-1]["val"],
            "precision": (trainer.dtype, trainer.eval_dtype),
        }
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        cleanup(ctx)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    rng = np.random.default_rng(0)
    clips = [
        (SkeletonClip(rng.random((20, 17, 3), dtype=np.float32), "coco17"), "ab"[i % 2], "train")
        for i in range(10)
    ]
    write_skeleton_folder(out / "data", clips, progress=False)
    mp.spawn(worker, args=(free_port(), str(out)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]


def test_ranks_share_rank_0s_precision_choice(results):
    assert [r["precision"] for r in results] == [(torch.bfloat16, torch.bfloat16)] * 2


def test_ddp_ranks_hold_identical_parameters_after_a_step(results):
    first, second = (r["params"] for r in results)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_trainer_under_ddp_keeps_ranks_equal(results):
    first, second = results
    torch.testing.assert_close(first["trained"], second["trained"], rtol=0, atol=0)
    assert first["val"] == second["val"]  # gathered predictions: the same metrics on every rank
    assert first["val"]["num_samples"] == 4  # 2 clips per class held out, none duplicated


def test_gather_drops_sampler_padding(results):
    assert sorted(len(r["shard"]) for r in results) == [3, 3]  # 5 samples + 1 duplicate
    for result in results:
        np.testing.assert_array_equal(result["unique"], np.arange(5))
        np.testing.assert_array_equal(result["value"], np.arange(5) * 10.0)
        assert result["total"].item() == WORLD_SIZE


def test_single_process_defaults():
    ctx = init_distributed("cpu")
    assert ctx.is_main and not ctx.is_distributed
    model = nn.Linear(2, 2)
    assert wrap_model(model, ctx) is model
    assert make_sampler([1, 2, 3], ctx, shuffle=True) is None
    unique, merged = gather_by_index(np.array([2, 0, 2]), {"v": np.array([5, 6, 7])}, ctx)
    np.testing.assert_array_equal(unique, [0, 2])
    np.testing.assert_array_equal(merged["v"], [6, 5])


def test_autocast_dtype_choices():
    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="'auto' is decided by timing the model"):
        autocast_dtype("auto", cpu)
    with pytest.raises(ValueError, match=r"fp16.*CUDA"):
        autocast_dtype("fp16", cpu)
