"LAReQA metrics against pytrec_eval and a naive argsort, bootstrap, result records, MIRACL measures."
import json, re
import numpy as np, pandas as pd
import pytest, pytrec_eval
from hypothesis import given, settings, strategies as st, HealthCheck
from hybrid_batch.data import LareqaPool, load_lareqa
from hybrid_batch.evaluate import (lareqa_metrics, ranks_above, relevant_pairs, language_codes, average_precision,
    paired_bootstrap, result_record, save_result, load_result, results_frame, evaluate, rank_distance, question_table,
    search_topk, search_recall, load_miracl, ndcg_at_k, recall_at_k, SCORE_NAMES)
from hybrid_batch.models import char_encoder

def random_pool(rng, n_langs, max_cands, n_qids, p_rel):
    "A pool of `n_langs` languages where each qid is asked in a random subset of languages and has a relevant candidate."
    langs = ["l0", "l1", "l2", "l3"][:n_langs]
    cand_lang = np.repeat(langs, rng.integers(1, max_cands + 1, n_langs))
    rng.shuffle(cand_lang)  # candidates need not be grouped by language
    rel = {f"q{i}": np.union1d(np.flatnonzero(rng.random(len(cand_lang)) < p_rel), rng.integers(0, len(cand_lang), 1))
           for i in range(n_qids)}
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
    scores += 1  # the same order, but no all-zero candidate embedding (those are refused)
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
    with pytest.raises(ValueError, match="ranks is empty"): average_precision([])
    with pytest.raises(ValueError, match="ranks are 1-based, got -1"): average_precision([3, -1])
    with pytest.raises(ValueError, match="got 4 twice"): average_precision([4, 4])
    with pytest.raises(ValueError, match=r"rank\[0\] = 0: ranks are 1-based"): rank_distance(np.array([0]), np.array([0]), np.array([0]))

# ---- no silent wrong numbers: bad embeddings and relevance on a real pool ------------------

@pytest.fixture(scope="module")
def de_pool():
    "MLQA-R German alone: 512 questions, 2,362 candidates, random unit embeddings."
    pool = load_lareqa("mlqa-r", langs=["de"])
    rng = np.random.default_rng(0)
    unit = lambda n: (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))(rng.standard_normal((n, 8)).astype(np.float32))
    return pool, unit(len(pool.questions)), unit(len(pool.candidates))

def _set(a, row, value):
    "Copy of `a` with `a[row, 2] = value`, or row `row` all zeros if `value` is 0."
    a = a.copy()
    if value == 0: a[row] = 0
    else: a[row, 2] = value
    return a

def test_nan_inf_and_zero_embeddings_are_errors(de_pool):
    pool, q, c = de_pool
    worst = lareqa_metrics(pool, q, c).per_question.first_rank.max()
    assert worst <= len(pool.candidates) == 2362  # before the checks, a NaN query got rank 2,363
    with pytest.raises(ValueError, match=r"q_emb row 0 holds nan \(1 row\(s\) not finite\)"): lareqa_metrics(pool, _set(q, 0, np.nan), c)
    with pytest.raises(ValueError, match="c_emb row 17 holds inf"): lareqa_metrics(pool, q, _set(c, 17, np.inf))
    with pytest.raises(ValueError, match="c_emb row 5 holds -inf"): lareqa_metrics(pool, q, _set(c, 5, -np.inf))
    with pytest.raises(ValueError, match=r"q_emb row 3 is all zeros \(1 such row\(s\)\)"): lareqa_metrics(pool, _set(q, 3, 0), c)
    with pytest.raises(ValueError, match="q_emb has dimension 8, c_emb 4"): lareqa_metrics(pool, q, c[:, :4])
    with pytest.raises(ValueError, match="q_emb must be 2-d"): lareqa_metrics(pool, q.ravel()[:512], c)

def _with_relevant(pool, row, rel):
    "`pool` with the relevance list of question `row` replaced (or removed if `rel` is None)."
    key = (pool.questions.lang[row], pool.questions.qid[row])
    relevant = {k: v for k, v in pool.relevant.items() if k != key}
    if rel is not None: relevant[key] = np.array(rel, dtype=np.int64)
    return LareqaPool(pool.name, pool.langs, pool.questions, pool.candidates, relevant), key

@pytest.mark.parametrize("rel,msg", [
    ([-1], r"pool.relevant\[{key}\] \(question row 7\) holds candidate -1, outside \[0, 2362\): the pool has 2362 candidates"),
    ([2362], r"holds candidate 2362, outside \[0, 2362\)"),
    ([], r"question row 7 {key} has no relevant candidate"),
    (None, r"question row 7 {key} has no relevant candidate \(its pool.relevant entry is empty or missing"),
    ([4, 9, 4], r"pool.relevant\[{key}\] \(question row 7\) lists candidate 4 more than once")])
def test_bad_relevance_is_an_error(de_pool, rel, msg):
    pool, q, c = de_pool
    bad, key = _with_relevant(pool, 7, rel)
    with pytest.raises(ValueError, match=msg.format(key=re.escape(str(key)))): lareqa_metrics(bad, q, c)

def test_bad_pairs_are_errors(de_pool):
    pool, q, c = de_pool
    pair_q, pair_c = relevant_pairs(pool)
    cl = language_codes(pool.candidates.lang, pool.langs)
    with pytest.raises(ValueError, match=r"pair_c\[0\] = -1 is outside \[0, 2362\)"):
        ranks_above(q, c, pair_q, np.r_[-1, pair_c[1:]], cl, 1)
    with pytest.raises(ValueError, match=r"pair_q\[3\] = 512 is outside \[0, 512\)"):
        ranks_above(q, c, np.r_[pair_q[:3], 512, pair_q[4:]], pair_c, cl, 1)
    with pytest.raises(ValueError, match="pair_q must be sorted"): ranks_above(q, c, pair_q[::-1], pair_c, cl, 1)
    with pytest.raises(ValueError, match="cand_lang has 2361 entries for 2362 candidates"): ranks_above(q, c, pair_q, pair_c, cl[1:], 1)
    with pytest.raises(ValueError, match=r"cand_lang\[0\] = 1 is outside \[0, 1\)"): ranks_above(q, c, pair_q, pair_c, cl + 1, 1)
    above = ranks_above(q, c, pair_q, pair_c, cl, 1)
    with pytest.raises(ValueError, match="pair_c.* = 2362 is outside"): question_table(pool, above, pair_q, np.r_[pair_c[:-1], 2362])

def test_evaluate_refuses_nan_from_the_encoder(de_pool):
    pool, q, c = de_pool
    class NanEncoder:  # stands in for a model whose forward pass overflowed
        def encode_query(self, texts, **kw): return np.where(np.arange(len(texts))[:, None] == 2, np.nan, q)
        def encode_document(self, texts, **kw): return c
    with pytest.raises(ValueError, match="q_emb row 2 holds nan"): evaluate(NanEncoder(), pool, show_progress_bar=False)

def test_search_and_bootstrap_refuse_non_finite():
    q, c = np.ones((3, 4), np.float32), np.eye(5, 4, dtype=np.float32) + 1
    c[4, 1] = np.nan
    with pytest.raises(ValueError, match="c_emb row 4 holds nan"): search_topk(q, c, 2)
    with pytest.raises(ValueError, match="q_emb row 0 is all zeros"): search_topk(np.zeros((1, 4)), c[:4], 2)
    with pytest.raises(ValueError, match=r"a\[1\] = nan: paired scores must be finite"): paired_bootstrap([1, np.nan], [1, 2])

# ---- result records are strict JSON -------------------------------------------------------

def test_one_language_record_is_strict_json(de_pool, tmp_path):
    pool, q, c = de_pool
    res = lareqa_metrics(pool, q, c)
    assert np.isnan(res.scores["cross_map"]) and np.isnan(res.scores["cross_r1"])  # no X -> Y pair in one language
    rec = result_record(res, "random")
    assert rec["scores"]["cross_map"] is None and rec["scores"]["cross_r1"] is None
    assert rec["main_score"] == pytest.approx(res.scores["multi_map"])
    text = save_result(rec, tmp_path/"r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in a result record"))
    back = load_result(tmp_path/"r.json")
    assert back["scores"]["cross_map"] is None and back["by_pair"][0]["rank_distance"] is None  # mono row
    frame = results_frame([tmp_path/"r.json", rec])
    assert frame.cross_map.isna().all() and frame.cross_map.dtype == float and frame.mono_map.notna().all()

def test_non_finite_record_is_not_written(de_pool, tmp_path):
    pool, q, c = de_pool
    rec = result_record(lareqa_metrics(pool, q, c), "random")
    for bad in ({**rec, "scores": {**rec["scores"], "multi_r10": float("inf")}},
                {**rec, "by_pair": [{**rec["by_pair"][0], "map": float("nan")}]}):
        with pytest.raises(ValueError, match=r"r.json not written: JSON has no NaN or infinity, but record\['(scores|by_pair)'\]"):
            save_result(bad, tmp_path/"r.json")
    assert list(tmp_path.iterdir()) == []

def test_settings_count_132_on_xquad_r_languages():
    from hybrid_batch.data import XQUAD_R_LANGS as langs
    pool = LareqaPool("eleven", langs, pd.DataFrame({"qid": "a", "lang": langs, "text": ""}),
                      pd.DataFrame({"lang": langs, "text": "", "context": "", "doc": ""}),
                      {(l, "a"): np.arange(len(langs)) for l in langs})
    s = lareqa_metrics(pool, np.ones((11, 4)), np.eye(11, 4) + 1).by_pair.setting.value_counts()
    assert (s["mono"], s["cross"], s["multi"], s.sum()) == (11, 110, 11, 132)

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
