"Rank distance on constructed rankings, same-language share, figures and the CLI hook (checked languages, safe folders)."
from pathlib import Path
import numpy as np, pandas as pd
import pytest
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt
from hybrid_batch.data import LareqaPool
from hybrid_batch.evaluate import lareqa_metrics, rank_distance, load_result
from hybrid_batch.models import char_encoder
from hybrid_batch.bias import (rank_distance_table, same_language_share, language_bias_table, save_figure,
                               plot_pair_heatmap, plot_language_bias, plot_models, evaluate_cli)

def ranking_pool(orders, cand_langs, relevant, query_langs=None):
    "A pool whose question i ranks the candidates in `orders[i]` (best first); scores are exact."
    n, C = len(orders), len(cand_langs)
    scores = np.zeros((n, C), np.float32)
    for i, o in enumerate(orders): scores[i, o] = np.arange(C, 0, -1)
    query_langs = query_langs or ["en"] * n
    langs = list(dict.fromkeys(cand_langs))
    qs = pd.DataFrame({"qid": [f"q{i}" for i in range(n)], "lang": query_langs, "text": ""})
    cands = pd.DataFrame({"lang": cand_langs, "text": "", "context": "", "doc": ""})
    rel = {(l, f"q{i}"): np.array(sorted(r)) for i, (l, r) in enumerate(zip(query_langs, relevant))}
    return LareqaPool("constructed", langs, qs, cands, rel), np.eye(n, dtype=np.float32), scores.T.copy()

def test_rank_distance_known_ranking():
    langs = ["en", "de", "fr"] * 4
    # question 0: en answers at ranks 2 and 9, de at 5, fr at 11 -> best per language 2, 5, 11 -> 9
    order0 = [1, 3, 2, 4, 7, 8, 10, 11, 6, 9, 5, 0]  # candidate at each rank
    rel0 = [order0[1], order0[8], order0[4], order0[10]]
    assert [langs[c] for c in rel0] == ["en", "en", "de", "fr"]
    # question 1 (German): answers only in de and en at ranks 1 and 2 -> 1; fr has none (skipped)
    order1 = list(range(12))
    rel1 = [1, 0]
    pool, q, c = ranking_pool([order0, order1], langs, [rel0, rel1], ["en", "de"])
    res = lareqa_metrics(pool, q, c)
    multi = res.per_question[res.per_question.pool_lang == "all"].set_index("question")
    assert multi.rank_distance.tolist() == [9, 1]
    assert res.scores["rank_distance"] == pytest.approx(5)  # mean over query languages en (9), de (1)
    t = rank_distance_table(res).set_index("query_lang")
    assert t.loc["en", "mean"] == 9 and t.loc["de", "at_zero"] == 0
    assert ((res.per_question.pool_lang == "fr") & (res.per_question.question == 1)).sum() == 0

def test_rank_distance_zero_when_languages_come_together():
    d = rank_distance(np.zeros(3, int), np.array([0, 1, 2]), np.array([1, 2, 3]))
    assert d.tolist() == [2]
    d = rank_distance(np.array([0, 0, 1]), np.array([0, 0, 1]), np.array([5, 7, 1]))
    assert d.tolist() == [0, 0]  # one language only

def test_same_language_share_and_bias_table():
    langs = ["en"] * 2 + ["de"] * 6
    # question 0 (en): top 4 = en, en, de, de -> 0.5; question 1 (de): top 4 all de -> 1.0
    pool, q, c = ranking_pool([[0, 1, 2, 3, 4, 5, 6, 7], [2, 3, 4, 5, 0, 1, 6, 7]], langs, [[0], [2]], ["en", "de"])
    s = same_language_share(pool, q, c, k=4)
    assert s.share.tolist() == [0.5, 1.0]
    t = language_bias_table(pool, s).set_index("query_lang")
    assert t.loc["en", "expected"] == pytest.approx(0.25) and t.loc["en", "bias"] == pytest.approx(2.0)
    assert t.loc["de", "expected"] == pytest.approx(0.75) and t.loc["de", "bias"] == pytest.approx(4 / 3)

def test_figures_are_saved_atomically(tmp_path):
    langs = ["en", "de"] * 3
    pool, q, c = ranking_pool([[0, 1, 2, 3, 4, 5], [1, 0, 2, 3, 4, 5]], langs, [[0, 1], [0, 1]], ["en", "de"])
    res = lareqa_metrics(pool, q, c)
    ax = plot_pair_heatmap(res)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["en", "de", "all"]
    path = save_figure(ax.figure, tmp_path/"fig"/"pairs.png")
    assert plt.imread(path).ndim == 3
    plot_language_bias(language_bias_table(pool, same_language_share(pool, q, c, k=2)))
    fig = plot_models({"a": res, "b": res})
    save_figure(fig, tmp_path/"fig"/"models.pdf")
    with pytest.raises(ValueError): save_figure(fig, tmp_path/"fig"/"models.nosuchformat")
    assert sorted(p.name for p in (tmp_path/"fig").iterdir()) == ["models.pdf", "pairs.png"]
    plt.close("all")

def test_evaluate_cli_writes_record_and_figures(tmp_path):
    rec = evaluate_cli(char_encoder(), "mlqa-r", tmp_path, langs=["de", "vi"], batch_size=512, show_progress_bar=False)
    files = {k: tmp_path/"SentenceTransformer"/p.split("/")[-1] for k, p in rec["files"].items()}
    assert all(p.is_file() for p in files.values())
    back = load_result(files["record"])
    assert back["model"] == "SentenceTransformer" and back["dataset"] == "mlqa-r" and back["languages"] == ["de", "vi"]
    assert set(back["scores"]) >= {"mono_map", "cross_map", "multi_map", "rank_distance", "encode_time"}
    q = pd.read_csv(files["questions"])
    assert len(q) == sum(p["n_questions"] for p in back["by_pair"])
    assert not [p for p in tmp_path.rglob("*.part")]

@pytest.mark.parametrize("name", ["..", ".", "/abs/path", "a/../../b", "../../etc"])
def test_evaluate_cli_writes_under_out_dir(tmp_path, monkeypatch, name):
    "Whatever the model name, every file lands in one folder directly under out_dir."
    import hybrid_batch.models
    monkeypatch.setattr(hybrid_batch.models, "load_encoder", lambda *a, **kw: char_encoder())
    out = tmp_path/"deep"/"out"
    rec = evaluate_cli(name, "mlqa-r", out, langs=["de"], batch_size=512, show_progress_bar=False)
    folders = {Path(p).resolve().parent for p in rec["files"].values()}
    assert len(folders) == 1 and folders.pop().parent == out.resolve()
    assert [p for p in tmp_path.rglob("*") if p.is_file() and out.resolve() not in p.resolve().parents] == []

@pytest.mark.parametrize("langs, msg", [([], "langs is empty; choose from ar de en es hi vi zh"),
                                        (["de", "de"], r"langs repeats \['de'\]"),
                                        (["xx"], r"unknown language code\(s\) \['xx'\] for mlqa-r")])
def test_evaluate_cli_checks_langs_before_loading(tmp_path, monkeypatch, langs, msg):
    import hybrid_batch.models
    def no_load(*a, **kw): raise AssertionError("the encoder must not load")
    monkeypatch.setattr(hybrid_batch.models, "load_encoder", no_load)
    with pytest.raises(ValueError, match=msg):
        evaluate_cli("multilingual-e5-small", "mlqa-r", tmp_path, langs=langs)
    assert list(tmp_path.iterdir()) == []
