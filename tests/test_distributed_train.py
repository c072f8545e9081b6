"Data-parallel training: 2 CPU processes (gloo) train the tiny model; torchrun runs the CLI the same way."
import hashlib, json, os, shutil, socket, subprocess, sys, tempfile
from pathlib import Path
import pandas as pd, pytest
import torch, torch.distributed as dist, torch.multiprocessing as mp

TINY = dict(model="tiny", train_data="xquad", langs=["en", "de", "es", "zh"], eval_pool=None, batch_size=4,
            eval_every=2, warmup_steps=1, lr=1e-3, valid_batches=2, trim_vocab=False, max_length=32,
            max_steps=4, checkpoint_every=0)

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def _digest(model):
    h = hashlib.sha256()
    for n, p in sorted(model.state_dict().items()): h.update(n.encode()); h.update(p.detach().numpy().tobytes())
    return h.hexdigest()

def _worker(rank, port, out_dir):
    "One rank, with the environment torchrun would give it; `train` joins the group itself."
    from hybrid_batch.train import TrainConfig, train
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
    try:
        r = train(TrainConfig(**TINY), progress=False)
        losses = r.history.loss.dropna().tolist()
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"digest": _digest(r.model), "report": r.report, "losses": losses}))
    finally:
        if dist.is_initialized(): dist.destroy_process_group()

@pytest.fixture(scope="module")
def spawned():
    "What each of two `mp.spawn` ranks ended with: weight digest, sampler report, its own losses."
    out = tempfile.mkdtemp()
    mp.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
    ranks = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in (0, 1)]
    shutil.rmtree(out)
    return ranks

def test_two_ranks_end_with_the_same_weights_and_batch_types(spawned):
    a, b = spawned
    assert a["digest"] == b["digest"], "gradients were not averaged: the ranks' weights differ"
    assert a["report"]["batch_types"] == b["report"]["batch_types"]
    assert a["losses"] != b["losses"], "both ranks trained on the same slice"

def test_torchrun_runs_the_cli(tmp_path, spawned):
    "The CLI under torchrun trains as the spawned group does: rank 0 writes rank 0's losses, not a lone process's."
    (tmp_path/"cfg.json").write_text(json.dumps(dict(TINY, output_dir=str(tmp_path/"run"))))
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([str(bin_dir/"torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()), "--no-python",
                    str(bin_dir/"hybrid-batch"), "train", "--config", str(tmp_path/"cfg.json")],
                   check=True, capture_output=True, env=env, timeout=300)
    run = json.loads((tmp_path/"run"/"run.json").read_text())
    assert run["steps"] == 4 and (tmp_path/"run"/"model").is_dir()
    assert pd.read_csv(tmp_path/"run"/"history.csv").loss.dropna().tolist() == spawned[0]["losses"]
