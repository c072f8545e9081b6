"Data layer on the real LAReQA/XQuAD files: counts, relevance, bad input, and the download path."
import http.server, json, os, re, shutil, threading
from functools import partial
import numpy as np
import pytest
from hybrid_batch import data as D
from hybrid_batch.core import sha256_file

QID = "56beb4343aeaaa14008c925b"  # XQuAD-R: "How many points did the Panthers defense surrender?" -> 308

XQUAD_R_CANDIDATES = dict(ar=1222, de=1276, el=1234, en=1180, es=1215, hi=1244, ru=1219, th=852, tr=1167, vi=1209, zh=1196)
MLQA_R_COUNTS = dict(ar=(517, 2545), de=(512, 2362), en=(1148, 6264), es=(500, 1787), hi=(507, 2426), vi=(511, 2828), zh=(504, 2322))

def test_xquad_r_counts():
    s = D.pool_summary(D.load_lareqa("xquad-r"))
    assert s.candidates.to_dict() == XQUAD_R_CANDIDATES
    assert set(s.questions) == {1190}

def test_mlqa_r_counts():
    s = D.pool_summary(D.load_lareqa("mlqa-r"))
    assert {l: (r.questions, r.candidates) for l, r in s.iterrows()} == MLQA_R_COUNTS

def test_relevance_hand_checked_three_languages():
    pool = D.load_lareqa("xquad-r", langs=["en", "de", "zh"])
    rel = pool.relevant[("de", QID)]
    texts = dict(zip(pool.candidates.lang[rel], pool.candidates.text[rel]))
    assert texts["en"].startswith("The Panthers defense gave up just 308 points")
    assert texts["de"].startswith("Die Verteidigung der Panthers gab nur 308 Punkte ab")
    assert texts["zh"].startswith("黑豹队的防守只丢了 308分")
    assert len(rel) == 3 and all(np.array_equal(pool.relevant[(l, QID)], rel) for l in pool.langs)
    # the other sentences of the same paragraph are not relevant
    same_par = pool.candidates.index[pool.candidates.context == pool.candidates.context[rel[0]]]
    assert len(same_par) > 1 and set(same_par) & set(rel) == {rel[0]}

def test_mlqa_r_groups_have_unequal_languages():
    pool = D.load_lareqa("mlqa-r")
    n = pool.questions.groupby("qid").size()
    assert n.min() == 2 and n.max() == 4
    q = pool.questions.iloc[0]
    rel = pool.relevant[(q.lang, q.qid)]
    assert sorted(pool.candidates.lang[rel]) == sorted(pool.questions.lang[pool.questions.qid == q.qid])

def test_xquad_pairs_parallel_and_aligned():
    pairs = D.load_xquad()
    assert len(pairs) == 12 * 1190 and pairs.groupby("group").lang.nunique().eq(12).all()
    assert all(p in c for p, c in zip(pairs.positive, pairs.context))
    assert (pairs.apply(lambda r: r.sentences[r.answer_idx] == r.positive, axis=1)).all()
    row = pairs[(pairs.group == QID) & (pairs.lang == "ro")].iloc[0]
    assert "308" in row.positive

def test_zero_shot_guard_both_directions():
    D.assert_disjoint(D.load_xquad(), D.load_lareqa("mlqa-r"))
    D.assert_disjoint(D.load_lareqa_pairs("mlqa-r"), D.load_lareqa("xquad-r"))
    leak = D.load_lareqa_pairs("xquad-r", ["en"]).iloc[:2]
    with pytest.raises(ValueError, match="shared question"):
        D.assert_disjoint(leak, D.load_lareqa("xquad-r", ["en"]))

def test_split_by_article_no_shared_paragraph():
    train, valid = D.split_by_article(D.load_lareqa_pairs("mlqa-r"), 0.2, seed=1)
    assert len(valid) > 0 and not set(train.group) & set(valid.group)
    assert not set(train.article) & set(valid.article)

def test_datasets_conversion():
    pool = D.load_lareqa("mlqa-r", ["es"])
    ds = D.pool_to_datasets(pool)
    assert ds["questions"].num_rows == 500 and ds["candidates"].num_rows == 1787

# ---- bad input: a copy of a real file, damaged in one place --------------------------------

@pytest.fixture
def bad_root(tmp_path, data_root, monkeypatch):
    "A copy of the real MLQA-R Spanish file, to be damaged by each test; the checksum check is off so the parser sees it."
    monkeypatch.setattr(D, "verify_file", lambda path, relpath: path)
    dest = tmp_path/"lareqa"/"mlqa-r"; dest.mkdir(parents=True)
    shutil.copy(data_root/"lareqa"/"mlqa-r"/"es.json", dest/"es.json")
    return tmp_path

def _edit(root, fn):
    path = root/"lareqa"/"mlqa-r"/"es.json"
    doc = json.loads(path.read_text(encoding="utf-8")); fn(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")

def test_truncated_json(bad_root):
    path = bad_root/"lareqa"/"mlqa-r"/"es.json"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"es\.json: not valid JSON"):
        D.load_lareqa("mlqa-r", ["es"], root=bad_root)

def test_missing_field(bad_root):
    _edit(bad_root, lambda d: d["data"][3]["paragraphs"][0].pop("sentences"))
    with pytest.raises(ValueError, match=r"es\.json: article 3 \(.*\), paragraph 0: missing field 'sentences'"):
        D.load_lareqa("mlqa-r", ["es"], root=bad_root)

def test_missing_question_field(bad_root):
    _edit(bad_root, lambda d: d["data"][0]["paragraphs"][0]["qas"][0].pop("answers"))
    with pytest.raises(ValueError, match=r"paragraph 0, question 0: missing field 'answers'"):
        D.load_lareqa("mlqa-r", ["es"], root=bad_root)

def test_breaks_not_covering_answer(bad_root):
    def shrink(d):
        par = d["data"][2]["paragraphs"][0]
        start = par["qas"][0]["answers"][0]["answer_start"]
        par["sentence_breaks"] = [[b, min(e, start)] if b <= start < e else [b, e] for b, e in par["sentence_breaks"]]
    _edit(bad_root, shrink)
    with pytest.raises(ValueError, match=r"article 2 .*paragraph 0, question .*: field 'sentence_breaks' does not cover answer_start="):
        D.load_lareqa("mlqa-r", ["es"], root=bad_root)

def test_empty_or_repeated_languages_are_errors():
    for load in (lambda l: D.load_lareqa("mlqa-r", l), lambda l: D.load_lareqa_pairs("xquad-r", l), D.load_xquad):
        with pytest.raises(ValueError, match=r"no language codes given for .* \(langs=\[\]\)"): load([])
        with pytest.raises(ValueError, match=r"language code\(s\) \['de'\] given more than once .*langs=\['de', 'en', 'de'\]"):
            load(["de", "en", "de"])
    assert D.load_lareqa("mlqa-r", "de").langs == ["de"]  # one code as a string is one language

def test_unknown_language_and_pool():
    with pytest.raises(ValueError, match=r"unknown language code\(s\) \['xx'\] for mlqa-r"):
        D.load_lareqa("mlqa-r", ["es", "xx"])
    with pytest.raises(ValueError, match="unknown language code"):
        D.load_xquad(["klingon"])
    with pytest.raises(ValueError, match="unknown pool 'squad'"):
        D.load_lareqa("squad")

def test_explicit_root_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="lareqa/mlqa-r/es.json not found in the data folder"):
        D.load_lareqa("mlqa-r", ["es"], root=tmp_path)

# ---- checksums of files on disk: real files, misnamed or cut short --------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch):
    "An empty cache folder (so nothing is remembered as verified yet)."
    monkeypatch.setenv("HYBRID_BATCH_CACHE", str(tmp_path/"cache"))
    return tmp_path/"cache"

def test_shared_data_matches_the_pinned_checksums(data_root, cache):
    for rel, sha in D.SHA256.items():
        assert sha256_file(data_root/rel) == sha, rel
        assert D.verify_file(data_root/rel, rel) == data_root/rel
    assert len(json.loads((cache/D.VERIFIED).read_text())) == len(D.SHA256) == 30

def test_german_file_named_spanish_is_refused(tmp_path, data_root, cache):
    dest = tmp_path/"data"/"lareqa"/"mlqa-r"; dest.mkdir(parents=True)
    shutil.copy(data_root/"lareqa"/"mlqa-r"/"de.json", dest/"es.json")
    want, got = D.SHA256["lareqa/mlqa-r/es.json"], D.SHA256["lareqa/mlqa-r/de.json"]
    with pytest.raises(ValueError, match=rf"data/lareqa/mlqa-r/es\.json is not the pinned lareqa/mlqa-r/es\.json: "
                                         rf"expected SHA-256 {want}, got {got}"):
        D.load_lareqa("mlqa-r", ["es"], root=tmp_path/"data")
    assert not (cache/D.VERIFIED).exists()

def test_cached_file_cut_to_five_articles_is_refused(tmp_path, data_root, cache, monkeypatch):
    monkeypatch.delenv("HYBRID_BATCH_DATA", raising=False)
    monkeypatch.setenv(D.MIRROR_ENV, "http://127.0.0.1:9")  # no download either
    doc = json.loads((data_root/"lareqa"/"mlqa-r"/"es.json").read_text(encoding="utf-8"))
    doc["data"] = doc["data"][:5]
    cut = cache/"data"/"lareqa"/"mlqa-r"/"es.json"; cut.parent.mkdir(parents=True)
    cut.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{re.escape(str(cut))} is not the pinned .*expected SHA-256 "
                                         rf"{D.SHA256['lareqa/mlqa-r/es.json']}, got {sha256_file(cut)}"):
        D.load_lareqa("mlqa-r", ["es"])

def test_verified_file_is_not_hashed_again_until_it_changes(tmp_path, data_root, cache, monkeypatch):
    calls = []
    monkeypatch.setattr(D, "sha256_file", lambda p: calls.append(p) or sha256_file(p))
    root = tmp_path/"data"; (root/"lareqa"/"mlqa-r").mkdir(parents=True)
    f = root/"lareqa"/"mlqa-r"/"es.json"; shutil.copy(data_root/"lareqa"/"mlqa-r"/"es.json", f)
    for _ in range(3): assert len(D.load_lareqa("mlqa-r", ["es"], root=root).candidates) == 1787
    assert calls == [f]
    rec = json.loads((cache/D.VERIFIED).read_text())[str(f.resolve())]
    assert rec == {"stamp": [f.stat().st_size, f.stat().st_mtime_ns], "sha256": D.SHA256["lareqa/mlqa-r/es.json"]}
    st = f.stat(); os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched: checked again
    D.data_file("lareqa/mlqa-r/es.json", root); assert len(calls) == 2
    raw = f.read_bytes(); f.write_bytes(raw[:-2] + b" }")  # same size, new content
    with pytest.raises(ValueError, match="is not the pinned lareqa/mlqa-r/es.json"): D.data_file("lareqa/mlqa-r/es.json", root)

def test_pinned_commits_are_full_ids():
    for folder, (repo, commit, _) in D._UPSTREAM.items():
        assert re.fullmatch(r"[0-9a-f]{40}", commit), (folder, commit)
    assert set(D._UPSTREAM) == {rel.rsplit("/", 1)[0] for rel in D.SHA256}

# ---- download path: a local HTTP server stands in for GitHub --------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass

@pytest.fixture
def mirror(tmp_path, monkeypatch, data_root):
    "An HTTP server on 127.0.0.1 serving repository/commit/path like raw.githubusercontent.com."
    served = tmp_path/"served"
    for rel in ("lareqa/mlqa-r/es.json", "lareqa/mlqa-r/de.json"):
        url_path = D.upstream_url(rel).split("/", 3)[3]
        (served/url_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data_root/rel, served/url_path)
    handler = partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(D.MIRROR_ENV, f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("HYBRID_BATCH_CACHE", str(tmp_path/"cache"))
    monkeypatch.delenv("HYBRID_BATCH_DATA", raising=False)
    yield served
    server.shutdown()

def test_download_good_file_then_cache(mirror, tmp_path):
    pool = D.load_lareqa("mlqa-r", ["es"])
    assert len(pool.candidates) == 1787
    cached = tmp_path/"cache"/"data"/"lareqa"/"mlqa-r"/"es.json"
    assert cached.is_file() and sha256_file(cached) == D.SHA256["lareqa/mlqa-r/es.json"]
    assert str(cached.resolve()) in json.loads((tmp_path/"cache"/D.VERIFIED).read_text())  # checked while downloading
    shutil.rmtree(mirror)  # the server is gone: the second load reads the cache
    assert len(D.load_lareqa("mlqa-r", ["es"]).candidates) == 1787

def test_download_corrupted_file_rejected(mirror, tmp_path):
    url_path = D.upstream_url("lareqa/mlqa-r/de.json").split("/", 3)[3]
    f = mirror/url_path
    raw = bytearray(f.read_bytes()); raw[len(raw) // 2] ^= 1; f.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch"):
        D.load_lareqa("mlqa-r", ["de"])
    folder = tmp_path/"cache"/"data"/"lareqa"/"mlqa-r"
    assert not folder.exists() or list(folder.iterdir()) == []

def test_offline_without_files_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(D.MIRROR_ENV, "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HYBRID_BATCH_CACHE", str(tmp_path/"cache"))
    monkeypatch.delenv("HYBRID_BATCH_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="set HYBRID_BATCH_DATA"):
        D.load_lareqa("mlqa-r", ["es"])

def test_offline_with_the_variable_set_names_its_folder(tmp_path, monkeypatch):
    "With HYBRID_BATCH_DATA already set to a folder lacking the file, the error names that folder instead of asking to set it."
    monkeypatch.setenv(D.MIRROR_ENV, "http://127.0.0.1:9")
    monkeypatch.setenv("HYBRID_BATCH_CACHE", str(tmp_path/"cache"))
    monkeypatch.setenv("HYBRID_BATCH_DATA", str(tmp_path/"empty"))
    with pytest.raises(FileNotFoundError, match=f"HYBRID_BATCH_DATA is set to {tmp_path/'empty'}, which has no lareqa/mlqa-r/es.json"):
        D.load_lareqa("mlqa-r", ["es"])
