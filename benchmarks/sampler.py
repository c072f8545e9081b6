"""Time HybridBatchSampler on XQuAD (1190 groups x 12 languages) and on MLQA-R pairs (unequal groups).

Usage: .venv/bin/python benchmarks/sampler.py [--batch-size 100] [--steps 2000] [--repeat 3]
Prints a table: construction time and microseconds per batch (best of `repeat` epochs, epoch set-up
included) for each batch type and X-Y mode, with the default epoch (every group about once) and with long
epochs where most batches reuse groups; the target is < 1 ms per batch of 100.
"""
from __future__ import annotations
import argparse, time
import pandas as pd
from hybrid_batch.data import load_lareqa_pairs, load_xquad
from hybrid_batch.sampler import HybridBatchSampler

SETTINGS = {"x_x_mono": dict(alpha=1.0), "x_y mixed": dict(alpha=0.0), "x_y pair": dict(alpha=0.0, cross_mode="pair"),
            "hybrid 0.5": dict(alpha=0.5)}

def per_batch_us(sampler:HybridBatchSampler, repeat:int)->float:
    "Best-of-`repeat` microseconds per batch over one epoch of `sampler`."
    best = float("inf")
    for epoch in range(repeat):
        sampler.set_epoch(epoch)
        t0 = time.perf_counter(); n = sum(1 for _ in sampler); best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6

def bench(name:str, pairs:pd.DataFrame, batch_size:int, steps:int, repeat:int)->list[dict]:
    rows = []
    for setting, kw in SETTINGS.items():
        t0 = time.perf_counter()
        s = HybridBatchSampler(pairs, batch_size, **kw)
        build = time.perf_counter() - t0
        rows.append({"data": name, "sampler": setting, "batch": batch_size, "build ms": round(build * 1e3, 1),
                     "steps / epoch": len(s), "µs / batch": round(per_batch_us(s, repeat)),
                     f"µs / batch, {steps}-step epochs": round(per_batch_us(HybridBatchSampler(pairs, batch_size, num_batches=steps, **kw), repeat))})
    return rows

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    rows = bench("XQuAD", load_xquad(), a.batch_size, a.steps, a.repeat)
    mlqa = load_lareqa_pairs("mlqa-r")
    rows += bench("MLQA-R", mlqa, min(a.batch_size, mlqa.lang.value_counts().min()), a.steps, a.repeat)
    print(pd.DataFrame(rows).to_string(index=False))

if __name__ == "__main__": main()
