"""Hybrid training on human against machine-translated pairs, evaluated zero-shot on MLQA-R (quick scale).

Usage: nice -n 5 .venv/bin/python benchmarks/translate_training.py [--seeds 0] [--threads 2] [--out results/translate]

Training sets (all XQuAD-derived, English rows plus one second language, same groups):
  en+es human         XQuAD's human Spanish
  en+es Apertium      English translated by Apertium eng-spa
  en+es pivot         English translated by Bergamot en→pt then Apertium pt→es
  en+pt Bergamot      English translated by Bergamot en→pt (MLQA-R has no Portuguese: transfer only)
Each is trained with the hybrid strategy (α=0.5) at the scale of the `quick` preset of hybrid_batch.tradeoff (batch 16,
top 4 layers) but for 30 steps, the preset's length when the committed results were made (it has 20 now), and
evaluated on MLQA-R en+es with the fast evaluation (bf16 where the CPU has it; the committed results are bf16); the
untrained encoder is the zero-shot row.
Each table goes to `run_one(..., pairs=table)`, which trains on it instead of the named data set.
Writes training.csv (mean over seeds), training_runs.csv (per run), runs/<training>-seed<s>.csv (per-question
scores) and training_bootstrap.csv (human − MT, paired bootstrap over questions of the seed-mean scores), each
atomically; a rerun skips the runs already in training_runs.csv.
"""
from __future__ import annotations
import argparse, time
from dataclasses import replace
from pathlib import Path
import pandas as pd
from hybrid_batch.core import atomic_write, set_threads
from hybrid_batch.data import load_xquad, load_lareqa
from hybrid_batch.evaluate import paired_bootstrap
from hybrid_batch.tradeoff import PRESETS, Variant, run_one
from hybrid_batch.translate import Apertium, FastTranslate, Pivot, translate_qa

SCORES = ["mono_map", "cross_map", "multi_map", "rank_distance"]

def training_sets()->dict:
    "Label -> pairs table (English + one translation), translating (or reading the cache) as needed."
    human = load_xquad(["en", "es"])
    en = human[human.lang == "en"]
    ap, bg = Apertium(), FastTranslate()
    return {"en+es human": human,
            "en+es Apertium": pd.concat([en, translate_qa(en, ap, ["es"])], ignore_index=True),
            "en+pt Bergamot": pd.concat([en, translate_qa(en, bg, ["pt"])], ignore_index=True),
            "en+es Bergamot→Apertium pivot": pd.concat([en, translate_qa(en, Pivot(bg, ap, "pt"), ["es"])], ignore_index=True)}

def run(cfg, pairs, seed, pool)->tuple:
    "One hybrid run on `pairs` (None: zero-shot): (record, per-question scores)."
    if pairs is None: return run_one(cfg, ("xquad", "mlqa-r"), None, None, pool, progress=False)
    return run_one(cfg, ("xquad", "mlqa-r"), Variant("hybrid", "hybrid", 0.5), seed, pool, progress=False, pairs=pairs)

def bootstrap(per_q:dict, ref:str="en+es human")->pd.DataFrame:
    "Reference minus every other training set, per score, over questions (seed-mean scores)."
    rows = []
    for label, s in per_q.items():
        if label == ref: continue
        a, b = per_q[ref], s.reindex(per_q[ref].index)
        for col in ("mono", "cross", "multi"):
            ok = a[col].notna() & b[col].notna()
            r = paired_bootstrap(a[col][ok].to_numpy(), b[col][ok].to_numpy(), n=10_000, seed=0)
            rows.append({"comparison": f"{ref} − {label}", "score": col, "diff": r.diff, "low": r.low, "high": r.high,
                         "n_questions": int(ok.sum()), "significant": not (r.low <= 0 <= r.high)})
    return pd.DataFrame(rows)

def summary(runs:pd.DataFrame)->pd.DataFrame:
    "Mean over seeds per training set, and the share of the human run's gain over zero-shot that each keeps."
    m = runs.groupby("training", sort=False)[SCORES + ["seconds"]].mean()
    m["seeds"] = runs.groupby("training", sort=False).size()
    zero, human = m.loc["zero-shot"], m.loc["en+es human"]
    for k in ("cross_map", "multi_map"):
        m[f"gain_kept_{k.split('_')[0]}"] = (m[k] - zero[k]) / (human[k] - zero[k])
    m.loc["zero-shot", [c for c in m if c.startswith("gain_kept")]] = float("nan")
    return m.reset_index()

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0]); ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/translate")
    a = ap.parse_args()
    set_threads(a.threads)
    # the quick scale as the committed results/translate were made (before `quick` went to 20 steps and fp32 encoding)
    q = PRESETS["quick"]
    cfg = replace(q, train={**q.train, "max_steps": 30, "eval_every": 15}, shared_prefix=False, fast_eval=True,
                  eval_langs={"mlqa-r": ["en", "es"]}, threads=a.threads)
    pool, t0 = load_lareqa("mlqa-r", ["en", "es"]), time.time()
    sets = training_sets()
    print(f"translation (or cache read): {time.time() - t0:.0f} s")
    out = Path(a.out)
    rows = pd.read_csv(out/"training_runs.csv").to_dict("records") if (out/"training_runs.csv").exists() else []
    per_q = {}
    for label, pairs in [("zero-shot", None)] + list(sets.items()):
        frames = []
        for seed in ([-1] if pairs is None else a.seeds):  # -1: no training, no seed
            csv = out/"runs"/f"{label.replace(' ', '_').replace('→', '-')}-seed{seed}.csv"
            if not any(r["training"] == label and r["seed"] == seed for r in rows):
                rec, qs = run(cfg, pairs, None if seed < 0 else seed, pool)
                with atomic_write(csv, "w") as f: qs.to_csv(f)
                rows.append({"training": label, "seed": seed, **{k: rec["scores"][k] for k in SCORES}, "seconds": rec["seconds"]})
                with atomic_write(out/"training_runs.csv", "w") as f: pd.DataFrame(rows).to_csv(f, index=False)
                print(rows[-1], flush=True)
            frames.append(pd.read_csv(csv, index_col=[0, 1]))
        per_q[label] = sum(frames) / len(frames)
    runs = pd.DataFrame(rows)
    for name, df in {"training_runs.csv": runs, "training.csv": summary(runs).round(4),
                     "training_bootstrap.csv": bootstrap(per_q).round(4)}.items():
        with atomic_write(out/name, "w") as f: df.to_csv(f, index=False)
    print(summary(runs).round(4).to_markdown(index=False))
    print(bootstrap(per_q).round(4).to_markdown(index=False))
    print(f"total wall time {(time.time() - t0) / 60:.1f} min")

if __name__ == "__main__": main()
