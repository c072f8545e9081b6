"LAReQA metrics against pytrec_eval and a naive argsort, bootstrap, result records, MIRACL measures."
import os
import numpy as np, pandas as pd
import pytest, pytrec_eval
from hypothesis import given, settings, strategies as st, HealthCheck
from hybrid_batch.data import LareqaPool, load_lareqa
from hybrid_batch.evaluate import (lareqa_metrics, ranks_above, relevant_pairs, language_codes, average_precision,
    paired_bootstrap, result_record, save_result, load_result, results_frame, evaluate,
    search_topk, search_recall, load_miracl, ndcg_at_k, recall_at_k, SCORE_NAMES)
from hybrid_batch.models import char_encoder

def random_pool(rng, n_langs, max_cands, n_qids, p_rel):
    "A pool of `n_langs` languages where each qid is asked in a random subset of languages."
    langs = ["l0", "l1", "l2", "l3"][:n_langs]
    cand_lang = np.repeat(langs, rng.integers(1, max_cands + 1, n_langs))
    rng.shuffle(cand_lang)  # candidates need not be grouped by language
    rel = {f"q{i}": np.flatnonzero(rng.random(len(cand_lang)) < p_rel) for i in range(n_qids)}
    qs = [(q, l) for q in rel for l in langs if rng.random() < 0.7] or [("q0", langs[0])]
    questions = pd.DataFrame({"qid": [q for q, _ in qs], "lang": [l for _, l in qs], "text": ""})
    cands = pd.DataFrame({"lang": cand_lang, "text": "", "context": "", "doc": ""})
    return LareqaPool("random", langs, questions, cands, {(l, q): rel[q] for q, l in qs})

def trec_run(pool, scores):
    "qrels and run for every (question, pool) with a relevant item; doc ids descend with the candidate index."
    C = len(pool.candidates)
    doc = [f"{C - 1 - i:06d}" for i in range(C)]  # trec_eval breaks ties by doc id descending = index ascending
    cl = pool.candidates.lang.to_numpy()
    qrels, run = {}, {}
    for qi, (qid, lang) in enumerate(zip(pool.questions.qid, pool.questions.lang)):
        rel = pool.relevant[(lang, qid)]
        for y in list(pool.langs) + ["all"]:
            members = np.arange(C) if y == "all" else np.flatnonzero(cl == y)
            r = np.intersect1d(rel, members)
            if len(r) == 0: continue
            qrels[f"{qi}|{y}"] = {doc[c]: 1 for c in r}
            run[f"{qi}|{y}"] = {doc[c]: float(scores[qi, c]) for c in members}
    return qrels, run

def check_against_trec(pool, scores):
    res = lareqa_metrics(pool, np.eye(len(scores), dtype=np.float32), scores.T.copy())
    qrels, run = trec_run(pool, scores)
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"map", "success"}).evaluate(run)
    pq = res.per_question
    keys = [f"{q}|{p}" for q, p in zip(pq.question, pq.pool_lang)]
    assert sorted(keys) == sorted(trec)
    np.testing.assert_allclose(pq.ap, [trec[k]["map"] for k in keys], atol=1e-6)
    np.testing.assert_allclose(pq.r1, [trec[k]["success_1"] for k in keys], atol=1e-6)
    np.testing.assert_allclose(pq.r10, [trec[k]["success_10"] for k in keys], atol=1e-6)
    return res

@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), n_langs=st.integers(1, 4), max_cands=st.integers(1, 15),
       n_qids=st.integers(1, 4), p_rel=st.floats(0.0, 0.6), ties=st.booleans())
def test_ap_and_success_match_pytrec_eval(seed, n_langs, max_cands, n_qids, p_rel, ties):
    rng = np.random.default_rng(seed)
    pool = random_pool(rng, n_langs, max_cands, n_qids, p_rel)
    shape = (len(pool.questions), len(pool.candidates))
    scores = (rng.integers(0, 4, shape) / 4 if ties else rng.permutation(np.prod(shape)).reshape(shape) / np.prod(shape))
    check_against_trec(pool, scores.astype(np.float32))

def naive_above(q_emb, c_emb, pair_q, pair_c, cand_lang, n_langs):
    "Reference: a full stable argsort of every question's scores."
    out = np.zeros((len(pair_q), n_langs), np.int64)
    for p, (q, c) in enumerate(zip(pair_q, pair_c)):
        s = q_emb[q] @ c_emb.T
        rank_order = np.argsort(-s, kind="stable")
        ahead = rank_order[:np.flatnonzero(rank_order == c)[0]]
        out[p] = np.bincount(cand_lang[ahead], minlength=n_langs)
    return out

def test_ranks_above_real_pool_matches_argsort():
    pool = load_lareqa("xquad-r", langs=["ar", "en", "zh"])
    rng = np.random.default_rng(0)
    # small integers: every dot product is exact whatever the summation order, and ties are frequent
    q = rng.integers(-3, 4, (len(pool.questions), 16)).astype(np.float32)
    c = rng.integers(-3, 4, (len(pool.candidates), 16)).astype(np.float32)
    c[5] = c[7]  # a duplicate candidate
    pair_q, pair_c = relevant_pairs(pool)
    cl = language_codes(pool.candidates.lang, pool.langs)
    fast = ranks_above(q, c, pair_q, pair_c, cl, 3, chunk=300)
    sub = np.random.default_rng(1).choice(len(pair_q), 300, replace=False)
    ref = naive_above(q, c, pair_q[sub], pair_c[sub], cl, 3)
    np.testing.assert_array_equal(fast[sub], ref)

def test_toy_pool_by_hand():
    scores = np.array([[0.9, 0.8, 0.1, 0.7, 0.2], [0.5, 0.3, 0.6, 0.9, 0.4]], np.float32)
    pool = LareqaPool("toy", ["en", "de"], pd.DataFrame({"qid": ["a", "a"], "lang": ["en", "de"], "text": ""}),
                      pd.DataFrame({"lang": ["en"] * 3 + ["de"] * 2, "text": "", "context": "", "doc": ""}),
                      {("en", "a"): np.array([1, 3]), ("de", "a"): np.array([1, 3])})
    res = check_against_trec(pool, scores)
    s = res.scores
    np.testing.assert_allclose([s["mono_map"], s["cross_map"], s["multi_map"]], [0.75, 2/3, (7/12 + 0.7) / 2])
    assert [s["mono_r1"], s["cross_r1"], s["multi_r10"], s["rank_distance"]] == [0.5, 0.5, 1.0, 2.5]

def test_mlqa_skips_questions_without_relevant_in_pool():
    pool = load_lareqa("mlqa-r", langs=["de", "hi", "zh"])
    rng = np.random.default_rng(0)
    res = lareqa_metrics(pool, rng.standard_normal((len(pool.questions), 8)), rng.standard_normal((len(pool.candidates), 8)))
    pair_q, pair_c = relevant_pairs(pool)
    cl = pool.candidates.lang.to_numpy()[pair_c]
    for (x, y), n in res.by_pair.set_index(["query_lang", "pool_lang"]).n_questions.items():
        qs = np.flatnonzero(pool.questions.lang.to_numpy() == x)
        expect = len(qs) if y == "all" else len(np.intersect1d(qs, pair_q[cl == y]))
        assert n == expect, (x, y)
    assert len(res.by_pair) == 3 * 4 and set(res.scores) == set(SCORE_NAMES)

def test_shape_mismatch_is_an_error():
    pool = load_lareqa("mlqa-r", langs=["de"])
    with pytest.raises(ValueError, match="do not match the pool"):
        lareqa_metrics(pool, np.zeros((3, 4)), np.zeros((len(pool.candidates), 4)))

def test_average_precision_definition():
    assert average_precision([2, 3]) == pytest.approx(7/12)
    assert average_precision([5]) == pytest.approx(0.2)

def test_evaluate_with_offline_encoder_and_record_roundtrip(tmp_path):
    pool = load_lareqa("mlqa-r", langs=["de", "hi"])
    model = char_encoder()
    res = evaluate(model, pool, batch_size=512, show_progress_bar=False)
    q = model.encode_query(pool.questions.text.tolist()[:3], convert_to_numpy=True)
    q2 = model.encode(["query: " + t for t in pool.questions.text.tolist()[:3]], convert_to_numpy=True)
    np.testing.assert_allclose(q, q2, atol=1e-6)  # the prompt is applied
    assert res.scores["evaluation_time"] > 0
    path = save_result(result_record(res, "char"), tmp_path/"r"/"mlqa-r.json")
    rec = load_result(path)
    assert rec["dataset"] == "mlqa-r" and rec["split"] == "dev" and rec["languages"] == ["de", "hi"]
    assert rec["main_score"] == pytest.approx(res.scores["multi_map"])
    assert len(rec["by_pair"]) == 6
    assert results_frame([path, rec]).shape[0] == 2
    assert [p.name for p in (tmp_path/"r").iterdir()] == ["mlqa-r.json"]

def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    a = rng.random(1000)
    r = paired_bootstrap(a, a)
    assert (r.diff, r.low, r.high) == (0.0, 0.0, 0.0)
    r = paired_bootstrap(a + 0.25, a)
    assert r.diff == pytest.approx(0.25) and r.low == pytest.approx(0.25) and r.high == pytest.approx(0.25)
    b = a - 0.1 + rng.normal(0, 0.2, 1000)
    r = paired_bootstrap(a, b, n=4000, seed=5)
    assert r.low < 0.1 < r.high and r.low > 0.05
    assert paired_bootstrap(a, b, n=500, seed=7) == paired_bootstrap(a, b, n=500, seed=7)
    assert paired_bootstrap(a, b, n=500, seed=7) != paired_bootstrap(a, b, n=500, seed=8)
    with pytest.raises(ValueError, match="equal-length"): paired_bootstrap(a, b[:10])

def test_search_topk_exact_and_approximate():
    rng = np.random.default_rng(0)
    q, c = rng.standard_normal((50, 16)).astype(np.float32), rng.standard_normal((2000, 16)).astype(np.float32)
    s, i = search_topk(q, c, 5)
    np.testing.assert_array_equal(i, np.argsort(-(q @ c.T), axis=1, kind="stable")[:, :5])
    assert search_recall(search_topk(q, c, 5, "ivf", nprobe=200)[1], i) > 0.95
    with pytest.raises(ValueError, match="method must be"): search_topk(q, c, 5, "lsh")

def test_miracl_offline_is_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1"); monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="needs the Hugging Face hub") as e: load_miracl("sw")
    assert "\n" not in str(e.value)

@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_docs=st.integers(1, 40), k=st.sampled_from([5, 10, 100]))
def test_ndcg_recall_match_pytrec_eval(seed, n_docs, k):
    rng = np.random.default_rng(seed)
    qrels = {f"q{i}": {f"d{j}": int(rng.integers(0, 4)) for j in range(n_docs) if rng.random() < 0.5} for i in range(3)}
    run = {f"q{i}": {f"d{j}": float(rng.integers(0, 5)) for j in range(n_docs)} for i in range(3)}  # ties on purpose
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut", "recall"}).evaluate(run)
    nd, rc = ndcg_at_k(qrels, run, k), recall_at_k(qrels, run, k)
    assert set(nd) == set(rc) == {q for q, r in qrels.items() if any(v > 0 for v in r.values())}
    for q in nd:
        assert nd[q] == pytest.approx(trec[q][f"ndcg_cut_{k}"], abs=1e-6)
        assert rc[q] == pytest.approx(trec[q][f"recall_{k}"], abs=1e-6)

def test_miracl_parsing_without_network(tmp_path, monkeypatch):
    import hybrid_batch.evaluate as ev
    (tmp_path/"topics.tsv").write_text('0\tWhat is "MIRACL"?\n7\tWie hoch ist die Zugspitze?\n', encoding="utf-8")
    (tmp_path/"qrels.tsv").write_text("0\tQ0\t12#0\t1\n0\tQ0\t13#2\t0\n7\tQ0\t99#1\t1\n", encoding="utf-8")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False); monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(ev, "_miracl_file", lambda lang, split, kind: str(tmp_path/f"{kind}.tsv"))
    t = load_miracl("de")
    assert t.queries.query_id.tolist() == ["0", "7"] and t.queries.text[0] == 'What is "MIRACL"?'
    assert t.qrels == {"0": {"12#0": 1, "13#2": 0}, "7": {"99#1": 1}}

def test_compare_results_pairs_rows_of_one_setting():
    from hybrid_batch.evaluate import compare_results, setting_of
    pool = load_lareqa("mlqa-r", langs=["de", "es"])
    rng = np.random.default_rng(0)
    q, c = rng.standard_normal((len(pool.questions), 8)), rng.standard_normal((len(pool.candidates), 8))
    a = lareqa_metrics(pool, q, c)
    assert compare_results(a, a, "cross").diff == 0.0
    mono = a.per_question[setting_of(a.per_question) == "mono"]
    better = lareqa_metrics(pool, q, c); better.per_question = a.per_question.assign(ap=a.per_question.ap + 0.1)
    assert compare_results(better, a, "mono").diff == pytest.approx(0.1)
    op = load_lareqa("mlqa-r", langs=["de", "hi"])
    other = lareqa_metrics(op, rng.standard_normal((len(op.questions), 8)), rng.standard_normal((len(op.candidates), 8)))
    with pytest.raises(ValueError, match="same pool"): compare_results(a, other)
    assert len(mono) == a.by_pair.query("setting == 'mono'").n_questions.sum()
