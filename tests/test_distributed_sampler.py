"Two CPU processes (gloo) each build HybridBatchSampler(num_replicas=2, rank=r); their batches must agree."
import os
import socket
import tempfile

import pandas as pd
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def _pairs():
    "Unequal groups: 60 groups over 4 languages, 1 to 4 languages each."
    langs = ["ar", "de", "en", "zh"]
    return pd.DataFrame([(f"q{g}", l) for g in range(60) for i, l in enumerate(langs) if i <= g % 4 or g % 5 == 0],
                        columns=["group", "lang"])

def _worker(rank, port, out_dir, kwargs):
    from hybrid_batch.sampler import HybridBatchSampler
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        s = HybridBatchSampler(_pairs(), num_replicas=WORLD, rank=rank, **kwargs)
        epochs = []
        for epoch in range(2):
            s.set_epoch(epoch)
            epochs.append(list(s))
        gathered = [None] * WORLD
        dist.all_gather_object(gathered, {"rank": rank, "len": len(s), "epochs": epochs})
        if rank == 0: pd.to_pickle(gathered, os.path.join(out_dir, "gathered.pkl"))
    finally:
        dist.destroy_process_group()

def _run(kwargs):
    out_dir = tempfile.mkdtemp()
    mp.spawn(_worker, args=(_free_port(), out_dir, kwargs), nprocs=WORLD, join=True)
    return pd.read_pickle(os.path.join(out_dir, "gathered.pkl"))

@pytest.mark.parametrize("kwargs", [dict(batch_size=4, alpha=0.5, seed=7), dict(batch_size=3, alpha=0.5, seed=1, cross_mode="pair")],
                         ids=["mixed", "pair"])
def test_ranks_share_batch_type_and_language_with_disjoint_groups(kwargs):
    from hybrid_batch.sampler import HybridBatchSampler
    got = _run(kwargs)
    assert [g["rank"] for g in got] == list(range(WORLD))
    assert len({g["len"] for g in got}) == 1
    for epoch in range(2):
        steps = list(zip(*(g["epochs"][epoch] for g in got)))
        assert len(steps) == got[0]["len"] > 0
        kinds = set()
        for batches in steps:
            mono = {b[0][1] == b[0][2] for b in batches}
            assert len(mono) == 1                                         # same batch type on every rank
            kinds |= mono
            if mono == {True}: assert len({l for b in batches for _, q, p in b for l in (q, p)}) == 1   # same language
            elif kwargs.get("cross_mode") == "pair": assert len({(q, p) for b in batches for _, q, p in b}) == 1
            else: assert all(q != p for b in batches for _, q, p in b)
            groups = [g for b in batches for g, _, _ in b]
            assert len(groups) == len(set(groups))                        # disjoint groups across ranks
        assert kinds == {True, False}
    # what the processes drew equals the single-process global batch, sliced by rank
    whole = HybridBatchSampler(_pairs(), **{**kwargs, "batch_size": kwargs["batch_size"] * WORLD})
    whole.set_epoch(1)
    assert [sum(bs, []) for bs in zip(*(g["epochs"][1] for g in got))] == list(whole)
