"""Training speed of the embedded e5-small on 2 cores: naive vs the fast path, and sampler cost per step.

Usage: .venv/bin/python benchmarks/train.py [--steps 12] [--batch-size 32] [--threads 2]

Runs the same seed and batches three ways and prints one table, all measured in this run:
  naive      full 250k-piece vocabulary, every weight trainable (AdamW keeps moments for the 96M-weight table)
  trimmed    vocabulary trimmed to the run's texts, every weight trainable (same maths: same losses)
  fast       trimmed + frozen word embeddings (the default of TrainConfig)
  fast+top4  fast, and only the top 4 of 12 layers trained (TrainConfig.train_layers=4; quick preset)
with steps/s, pairs/s, peak RSS, the losses of the first steps, and the ratio to naive; then the sampler's
time per batch against the step time.
"""
from __future__ import annotations
import argparse, resource, time
from dataclasses import asdict
import numpy as np, torch
from hybrid_batch.core import set_threads
from hybrid_batch.sampler import HybridBatchSampler, PairsDataset, collate_pairs
from hybrid_batch.train import TrainConfig, run_data, run_model, run_texts, optimizer_for, _step

def _rss_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def measure(cfg:TrainConfig, batches:list, texts:list|None)->dict:
    "Steps/s and losses of `len(batches)` steps (the first step, a warm-up, is not timed)."
    model = run_model(cfg, texts)
    model.train()
    opt, sched = optimizer_for(model, cfg)
    torch.manual_seed(cfg.seed + 1)
    losses, t = [_step(model, batches[0], cfg, opt, sched)], time.perf_counter()
    losses += [_step(model, b, cfg, opt, sched) for b in batches[1:]]
    secs = time.perf_counter() - t
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"steps/s": (len(batches) - 1) / secs, "pairs/s": cfg.batch_size * (len(batches) - 1) / secs,
            "trainable M": n_train / 1e6, "losses": losses, "peak RSS MB": _rss_mb()}

def sampler_us(train, cfg:TrainConfig, n:int=200)->float:
    s = HybridBatchSampler(train, cfg.batch_size, 0.5, seed=cfg.seed, num_batches=n)
    t = time.perf_counter(); sum(1 for _ in s)
    return (time.perf_counter() - t) / n * 1e6

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12); ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    set_threads(a.threads)
    base = TrainConfig(batch_size=a.batch_size, max_steps=a.steps, max_length=128)
    train, valid, pool = run_data(base)
    s = HybridBatchSampler(train, base.batch_size, 0.5, seed=base.seed, num_batches=a.steps)
    data = PairsDataset(train)
    batches = [collate_pairs([data[i] for i in b]) for b in s]
    texts = run_texts(train, valid, pool)
    runs = {"naive": (dict(trim_vocab=False, freeze_embeddings=False), None),
            "trimmed": (dict(trim_vocab=True, freeze_embeddings=False), texts),
            "fast": (dict(trim_vocab=True, freeze_embeddings=True), texts),
            "fast+top4": (dict(trim_vocab=True, freeze_embeddings=True, train_layers=4), texts)}
    res = {k: measure(TrainConfig(**{**asdict(base), **kw}), batches, t) for k, (kw, t) in runs.items()}
    print(f"threads={a.threads} batch={a.batch_size} steps={a.steps} (first untimed) max_length=128, torch {torch.__version__}")
    print(f"{'path':8} {'steps/s':>8} {'pairs/s':>8} {'ratio':>6} {'trainable M':>12} {'peak RSS MB':>12}  first losses")
    for k, r in res.items():
        print(f"{k:8} {r['steps/s']:8.3f} {r['pairs/s']:8.1f} {r['steps/s'] / res['naive']['steps/s']:6.2f} "
              f"{r['trainable M']:12.1f} {r['peak RSS MB']:12.0f}  {np.round(r['losses'][:4], 4).tolist()}")
    same = np.allclose(res["naive"]["losses"], res["trimmed"]["losses"], atol=1e-4)
    print(f"naive and trimmed losses equal to 1e-4 over all steps: {same}")
    us, step_us = sampler_us(train, base), 1e6 / res["fast"]["steps/s"]
    print(f"sampler: {us:.0f} us per batch = {100 * us / step_us:.3f}% of a fast step ({step_us / 1e6:.2f} s)")

if __name__ == "__main__": main()
