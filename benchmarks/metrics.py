"""Time `lareqa_metrics` on the full XQuAD-R pool against a naive argsort loop and pytrec_eval.

Embeddings are random unit vectors of the true shapes (13,090 questions x 13,014 candidates, dim 384)
unless `--embeddings q.npy c.npy` gives real ones. Threads are fixed with `set_threads`. The naive loop and
pytrec_eval run on a sample of questions (they are slow) and are scaled to the whole pool; all three are
measured in the same run and checked to give the same per-question AP on the sample.

    python benchmarks/metrics.py [--threads 2] [--naive 1000] [--trec 100] [--repeat 3] [--ann] [--embeddings q.npy c.npy]
"""
import argparse, os, time
import numpy as np, pandas as pd
from hybrid_batch.core import set_threads
from hybrid_batch.data import load_lareqa
from hybrid_batch.evaluate import lareqa_metrics, relevant_pairs, language_codes, search_topk, search_recall

def naive_table(pool, q_emb, c_emb, questions):
    "Per-question AP in every pool by a full stable argsort of each question's scores."
    cl = language_codes(pool.candidates.lang, pool.langs)
    pools = [(y, cl == i) for i, y in enumerate(pool.langs)] + [("all", np.ones(len(cl), bool))]
    rows = []
    for q in questions:
        s = q_emb[q] @ c_emb.T
        rel = pool.relevant[(pool.questions.lang[q], pool.questions.qid[q])]
        for y, member in pools:
            idx = np.flatnonzero(member)
            order = idx[np.argsort(-s[idx], kind="stable")]
            ranks = np.sort(np.flatnonzero(np.isin(order, rel))) + 1
            if len(ranks): rows.append((q, y, float(np.mean(np.arange(1, len(ranks) + 1) / ranks))))
    return pd.DataFrame(rows, columns=["question", "pool_lang", "ap"])

def trec_table(pool, q_emb, c_emb, questions):
    "Per-question AP in every pool with pytrec_eval (`map`, whole pool ranked)."
    import pytrec_eval
    cl = pool.candidates.lang.to_numpy()
    C = len(cl); doc = np.array([f"{C - 1 - i:06d}" for i in range(C)])
    qrels, run = {}, {}
    for q in questions:
        s = (q_emb[q] @ c_emb.T).tolist()
        rel = pool.relevant[(pool.questions.lang[q], pool.questions.qid[q])]
        for y in list(pool.langs) + ["all"]:
            idx = np.arange(C) if y == "all" else np.flatnonzero(cl == y)
            r = np.intersect1d(rel, idx)
            if len(r) == 0: continue
            qrels[f"{q}|{y}"] = {doc[c]: 1 for c in r}
            run[f"{q}|{y}"] = {doc[c]: s[c] for c in idx}
    t = pytrec_eval.RelevanceEvaluator(qrels, {"map"}).evaluate(run)
    return pd.DataFrame([(int(k.split("|")[0]), k.split("|")[1], v["map"]) for k, v in t.items()],
                        columns=["question", "pool_lang", "ap"])

def timed(f, *args, repeat=1):
    "Best wall time of `repeat` calls, the CPU time (all threads) of that call, and the last result."
    best = (np.inf, np.inf)
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = f(*args)
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best, out

def ann_table(q_emb, c_emb, k=10):
    "Time and recall@k (vs exact IndexFlatIP) of the approximate faiss indexes, whole pool as the index."
    rows = []
    (t, _), (_, exact) = timed(search_topk, q_emb, c_emb, k)
    rows.append(("flat (exact)", t, 1.0))
    for method, kw in (("hnsw", {"ef_search": 64}), ("hnsw", {"ef_search": 256}), ("ivf", {"nprobe": 8}), ("ivf", {"nprobe": 32})):
        (t, _), (_, idx) = timed(lambda: search_topk(q_emb, c_emb, k, method, **kw))
        rows.append((f"{method} {kw}", t, search_recall(idx, exact)))
    return pd.DataFrame(rows, columns=["index", "build+search s", f"recall@{k} vs exact"])

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--naive", type=int, default=1000, help="questions timed with the naive argsort loop")
    p.add_argument("--trec", type=int, default=100, help="questions timed with pytrec_eval")
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs of lareqa_metrics")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--ann", action="store_true", help="also time HNSW/IVF top-10 search and their recall vs exact")
    p.add_argument("--embeddings", nargs=2, metavar=("Q.npy", "C.npy"), help="real embeddings instead of random")
    a = p.parse_args(argv)
    print(f"threads: {set_threads(a.threads)}")
    pool = load_lareqa("xquad-r")
    Q, C = len(pool.questions), len(pool.candidates)
    if a.embeddings: q_emb, c_emb = (np.load(f).astype(np.float32) for f in a.embeddings)
    else:
        rng = np.random.default_rng(0)
        q_emb, c_emb = (rng.standard_normal((n, a.dim), dtype=np.float32) for n in (Q, C))
        for x in (q_emb, c_emb): x /= np.linalg.norm(x, axis=1, keepdims=True)
    print(f"pool: {Q} questions x {C} candidates, dim {q_emb.shape[1]}, {len(relevant_pairs(pool)[0])} relevant pairs, "
          f"{len(pool.langs) ** 2 + len(pool.langs)} settings")
    print(f"load average before timing: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    t_ours, res = timed(lareqa_metrics, pool, q_emb, c_emb, repeat=a.repeat)
    sample = np.random.default_rng(1).choice(Q, max(a.naive, a.trec), replace=False)
    t_naive, naive = timed(naive_table, pool, q_emb, c_emb, sample[:a.naive])
    t_trec, trec = timed(trec_table, pool, q_emb, c_emb, sample[:a.trec])
    ours = res.per_question.set_index(["question", "pool_lang"]).ap
    for name, ref in (("naive", naive), ("pytrec_eval", trec)):
        err = np.abs(ours.loc[list(zip(ref.question, ref.pool_lang))].to_numpy() - ref.ap.to_numpy())
        print(f"|AP - {name}| on its {ref.question.nunique()} questions: max {err.max():.2e}, "
              f"{(err > 1e-6).sum()} of {len(err)} (question, pool) above 1e-6")
    # The references score one question at a time (a matrix-vector product), we score chunks (matrix-matrix):
    # float32 rounding differs in the last bits, so candidates within ~1e-6 of a relevant one may swap.
    # Exactness on identical scores is what tests/test_evaluate.py checks; here a few swaps are expected
    # with real embeddings (near-duplicate sentences), none with random ones.
    (t_ours, c_ours), (t_naive, c_naive), (t_trec, c_trec) = t_ours, t_naive, t_trec
    table = pd.DataFrame({"method": ["lareqa_metrics (ours)", "naive argsort loop", "pytrec_eval"],
                          "questions timed": [Q, a.naive, a.trec], "wall s": [t_ours, t_naive, t_trec],
                          "cpu s": [c_ours, c_naive, c_trec]})
    table["wall s, all questions"] = table["wall s"] * Q / table["questions timed"]
    table["x slower than ours (wall)"] = table["wall s, all questions"] / t_ours
    table["x slower than ours (cpu)"] = table["cpu s"] * Q / table["questions timed"] / c_ours
    print(table.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    print({k: round(float(v), 4) for k, v in res.scores.items()})
    if a.ann: print(ann_table(q_emb, c_emb).to_string(index=False, float_format=lambda x: f"{x:.3f}"))

if __name__ == "__main__": main()
