"""Training speed of the embedded e5-small on 2 cores: the naive path, today's top-4 path and the cached path.

Usage: .venv/bin/python benchmarks/train.py [--steps 12] [--batch-size 32] [--max-length 64] [--threads 2] [--hard]
       .venv/bin/python benchmarks/train.py --curves 100 [--paths top4,cached] [--table] --out results/train-curves

Runs the same seed and the same batches every way and prints one table, all measured in this run:
  naive        full 250k-piece vocabulary, every weight trainable (AdamW keeps moments for the 96M-weight table)
  top4         trimmed vocabulary, frozen word embeddings, only the top 4 of 12 layers trained (the study presets
               until now): every step still runs the lower 8 layers forward
  cached       top4, with the lower 8 layers run once per text beforehand (`cache_frozen=True`): a step runs
               only the top 4 layers
  cached+bf16  cached, with the top layers under bfloat16 autocast
with steps/s, pairs/s, the ratio to top4 and to naive, peak RSS and the first losses; then the cache's size and
the time it took to fill (paid once per study direction, not per step).
With --curves N: N steps of each of --paths (default top4,cached) from the same start, validation loss (fp32,
no dropout) every 10 steps, written to OUT/curves.csv with OUT/about.json for the Train chapter's figures:
  top4, cached      same batches and seed: they differ only by dropout in the frozen layers and float16 states
  cached+bf16       cached, each step's forward under bfloat16 autocast (`TrainConfig.autocast`)
  cached seed 1     cached with seed 1 (other batches, other dropout masks): the seed noise the others are judged by
Usage: .venv/bin/python benchmarks/train.py --curves 100 --hard --paths "cached,cached+bf16,cached seed 1" --out results/train-bf16
"""
from __future__ import annotations
import argparse, resource, shlex, sys, time
from dataclasses import asdict
from functools import partial
from pathlib import Path
import numpy as np, pandas as pd, torch
from hybrid_batch.core import set_threads, atomic_write, write_json
from hybrid_batch.study import versions
from hybrid_batch.sampler import HybridBatchSampler, PairsDataset, collate_pairs
from hybrid_batch.train import (TrainConfig, run_data, run_model, run_texts, optimizer_for, batch_loss, embed,
                                cache_texts, frozen_cache, cached_embed, validation_batches, validation_loss)

def _rss_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def _step(model, batch, cfg, opt, sched, encode, autocast):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = batch_loss(model, batch, cfg, encode)
    opt.zero_grad(set_to_none=True); loss.float().backward(); opt.step(); sched.step()
    return loss.item()

def measure(cfg:TrainConfig, batches:list, texts:list|None, cache=None, autocast=False)->dict:
    "Steps/s and losses of `len(batches)` steps (the first step, a warm-up, is not timed)."
    model = run_model(cfg, texts); model.train()
    opt, sched = optimizer_for(model, cfg)
    encode = partial(cached_embed, cache) if cache else embed
    torch.manual_seed(cfg.seed + 1)
    losses = [_step(model, batches[0], cfg, opt, sched, encode, autocast)]
    t = time.perf_counter()
    losses += [_step(model, b, cfg, opt, sched, encode, autocast) for b in batches[1:]]
    secs = time.perf_counter() - t
    return {"steps/s": (len(batches) - 1) / secs, "pairs/s": cfg.batch_size * (len(batches) - 1) / secs,
            "losses": losses, "peak RSS MB": _rss_mb()}

CURVE_PATHS = {"top4": (False, False, 0), "cached": (True, False, 0), "cached+bf16": (True, True, 0),
               "cached seed 1": (True, False, 1)}  # name -> (from the cache, bf16 autocast, seed)

def _batches(base:TrainConfig, train, steps:int, seed:int)->list:
    s = HybridBatchSampler(train, base.batch_size, 0.5, seed=seed, num_batches=steps)
    data = PairsDataset(train, hard=base.hard_negatives, seed=seed)
    return [collate_pairs([data[i] for i in b]) for b in s]

def curves(base:TrainConfig, train, valid, texts, cache, steps:int, out:Path, paths:list):
    "Validation loss every 10 steps of each path; the same validation batches (seed 0) for all."
    vb, rows = validation_batches(valid, base), []
    for name in paths:
        cached, ac, seed = CURVE_PATHS[name]
        model = run_model(base, texts); model.train()
        opt, sched = optimizer_for(model, base)
        encode = partial(cached_embed, cache) if cached else embed
        batches = _batches(base, train, steps, seed)
        torch.manual_seed(seed + 1); t0 = time.perf_counter()
        for i, b in enumerate([None] + batches):
            if i: _step(model, b, base, opt, sched, encode, ac)
            if i % 10 == 0: rows.append({"path": name, "step": i, "valid_loss": validation_loss(model, vb, base, encode),
                                         "seconds": time.perf_counter() - t0})
        print(f"{name}: {steps} steps in {time.perf_counter() - t0:.0f} s, validation loss {rows[-steps // 10 - 1]['valid_loss']:.4f} -> {rows[-1]['valid_loss']:.4f}", flush=True)
    with atomic_write(out/"curves.csv", "w") as f: pd.DataFrame(rows).to_csv(f, index=False)
    write_json(out/"about.json", {"command": "benchmarks/train.py " + shlex.join(sys.argv[1:]), "steps": steps, "paths": paths,
                                  "train": asdict(base), "versions": versions()})
    print(f"wrote {out/'curves.csv'} and {out/'about.json'}")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12); ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64); ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hard", action="store_true", help="one hard negative per pair (the paper's objective)")
    ap.add_argument("--curves", type=int, default=0, help="instead: N steps of validation-loss curves of --paths")
    ap.add_argument("--paths", default="top4,cached", help=f"comma-separated curves, of {list(CURVE_PATHS)}")
    ap.add_argument("--out", default="results/train-curves")
    ap.add_argument("--table", action="store_true", help="with --curves: print the ratio table too (one cache fill for both)")
    a = ap.parse_args()
    paths = [p.strip() for p in a.paths.split(",")]
    if bad := [p for p in paths if p not in CURVE_PATHS]: sys.exit(f"--paths: unknown {bad}; choose from {list(CURVE_PATHS)}")
    if a.curves and a.curves % 10: sys.exit(f"--curves must be a multiple of 10 (validation every 10 steps), got {a.curves}")
    set_threads(a.threads)
    base = TrainConfig(batch_size=a.batch_size, max_steps=max(a.steps, a.curves, 2), max_length=a.max_length,
                       hard_negatives=a.hard, train_layers=4, valid_batches=4, warmup_steps=10)
    train, valid, pool = run_data(base)
    texts = run_texts(train, valid, pool)
    t = time.perf_counter()
    model = run_model(base, texts)
    cache = frozen_cache(model, cache_texts(pd.concat([train, valid])), n_frozen=8); del model
    fill = time.perf_counter() - t
    print(f"  cache of {len(cache.rows):,} texts filled in {fill:.0f} s", flush=True)
    if a.curves: curves(base, train, valid, texts, cache, a.curves, Path(a.out), paths)
    if a.curves and not a.table: return
    batches = _batches(base, train, a.steps, base.seed)
    top = dict(trim_vocab=True, freeze_embeddings=True, train_layers=4)
    runs = {"top4": (top, texts, None, False), "cached": (top, texts, cache, False), "cached+bf16": (top, texts, cache, True),
            "naive": (dict(trim_vocab=False, freeze_embeddings=False, train_layers=None), None, None, False)}
    res = {}
    for k, (kw, tx, c, ac) in runs.items():
        res[k] = measure(TrainConfig(**{**asdict(base), **kw}), batches, tx, c, ac)
        print(f"  measured {k}: {res[k]['steps/s']:.3f} steps/s", flush=True)
    from hybrid_batch.models import native_bf16
    lines = [f"threads={a.threads} batch={a.batch_size}{' + 1 hard negative each' if a.hard else ''} steps={a.steps} "
             f"(first untimed) max_length={a.max_length}, torch {torch.__version__}, CPU kernels "
             f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {native_bf16('cpu')}",
             f"{'path':12} {'steps/s':>8} {'pairs/s':>8} {'vs top4':>8} {'vs naive':>9} {'peak RSS MB':>12}  first losses"]
    for k, r in res.items():
        lines.append(f"{k:12} {r['steps/s']:8.3f} {r['pairs/s']:8.1f} {r['steps/s'] / res['top4']['steps/s']:8.2f} "
                     f"{r['steps/s'] / res['naive']['steps/s']:9.2f} {r['peak RSS MB']:12.0f}  {np.round(r['losses'][:4], 4).tolist()}")
    lines.append(f"cache: {len(cache.rows):,} texts, {cache.nbytes / 1e6:.0f} MB (float16), filled in {fill:.0f} s "
                 f"(= {fill * res['top4']['steps/s']:.0f} top4 steps)")
    diff = np.abs(np.array(res["cached"]["losses"]) - np.array(res["top4"]["losses"])).max()
    lines.append(f"largest loss difference cached vs top4 over the {a.steps} steps: {diff:.4f} (dropout in the frozen layers, float16 states)")
    print("\n".join(lines))
    if a.curves:  # beside the curves, the table they were measured with
        with atomic_write(Path(a.out)/"table.txt", "w") as f: f.write("\n".join(lines) + "\n")

if __name__ == "__main__": main()
