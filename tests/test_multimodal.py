"Multimodal: CLIPScore formula, split by class, sampler reuse, retrieval metrics against the text evaluator, caches."
import inspect
import numpy as np, pandas as pd
import pytest, torch
import hybrid_batch.multimodal as mm
from hybrid_batch.evaluate import average_precision, lareqa_metrics
from hybrid_batch.sampler import HybridBatchSampler
from hybrid_batch.multimodal import (clip_score, clipscore_table, load_class_names, load_templates, split_classes,
    assert_classes_disjoint, caption_table, photo_templates, training_sampler, MMTrainConfig, CaptionBank,
    train_projection, image_caption_pool, caption_image_pool, caption_pool, recall_by_lang, cross_map_by_lang,
    image_features, image_files, caption_embeddings, multimodal_config, _with_overrides, LANGS)

@pytest.fixture(scope="module")
def names(): return load_class_names()

@pytest.fixture(scope="module")
def templates(): return load_templates()

# --- CLIPScore ---------------------------------------------------------------------------------

def test_clip_score_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    cos = np.array([x @ y / np.linalg.norm(x) / np.linalg.norm(y) for x, y in zip(a, b)])
    np.testing.assert_allclose(clip_score(a, b), 2.5 * np.clip(cos, 0, None), rtol=1e-12)
    np.testing.assert_allclose(clip_score(a, b, w=100), 100 * np.clip(cos, 0, None), rtol=1e-12)
    assert (clip_score(a, -a) == 0).all() and np.allclose(clip_score(a, 3 * a), 2.5)  # clipping at 0, scale invariance

def test_clip_score_rejects_misaligned():
    with pytest.raises(ValueError, match="row-aligned"): clip_score(np.ones((3, 2)), np.ones((2, 2)))

def test_clipscore_table_matched_mismatched():
    img = np.eye(4)
    t = clipscore_table(img, np.vstack([img, -img]), ["EN", "DE"])
    assert t.loc["EN", "matched"] == 2.5 and t.loc["EN", "mismatched"] == 0 and t.loc["DE", "matched"] == 0
    assert t.loc["DE", "vs_en"] == -2.5

# --- data and split ----------------------------------------------------------------------------

def test_coverage_and_names(names):
    assert list(names.columns) == LANGS and len(names) == 1000
    assert names.EN.notna().all() and names.TR.notna().sum() < names.DE.notna().sum()

@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_has_no_class_on_both_sides(names, seed):
    train, test = split_classes(names, 0.3, seed)
    assert_classes_disjoint(train, test)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 1000
    assert names.loc[test].notna().all(axis=None)                  # every language names every test class
    np.testing.assert_array_equal(test, split_classes(names, 0.3, seed)[1])  # seeded

def test_split_errors(names):
    with pytest.raises(ValueError, match="test_frac"): split_classes(names, 1.5)
    with pytest.raises(ValueError, match="both train and test"): assert_classes_disjoint(np.array([4, 5]), np.array([5]))

def test_captions_of_train_and_test_do_not_share_classes(names, templates):
    train, test = split_classes(names, 0.3, 0)
    ids = photo_templates(templates, 2)
    a, b = caption_table(names, templates, train[:30], ids), caption_table(names, templates, test[:30], ids)
    assert not set(a.group) & set(b.group)
    assert not a.duplicated(["group", "lang", "template"]).any()

def test_bad_babel_language():
    with pytest.raises(ValueError, match="no language 'QQ'"): load_class_names(["EN", "QQ"])

# --- sampler reuse -----------------------------------------------------------------------------

def test_module_has_no_sampler_of_its_own():
    """The multimodal study draws its batches with the package's sampler: no Sampler class of its own, and
    `training_sampler` is a `HybridBatchSampler` whose batches follow its α."""
    own = [n for n, obj in vars(mm).items() if inspect.isclass(obj) and issubclass(obj, torch.utils.data.Sampler)
           and obj.__module__ == mm.__name__]
    assert own == []
    groups = pd.DataFrame({"group": np.repeat(np.arange(40), 2), "lang": ["EN", "DE"]*40})
    s = training_sampler(groups, MMTrainConfig(alpha=1.0, batch_size=8))
    assert type(s) is HybridBatchSampler
    for batch in s: assert len({(a, b) for _, a, b in batch}) == 1   # α = 1: every batch in one language

def test_sampler_is_the_package_sampler_on_real_groups(names, templates):
    train, _ = split_classes(names, 0.3, 0)
    groups = caption_table(names, templates, train, [photo_templates(templates, 1)[0]])[["group", "lang"]]
    for alpha in (1.0, 0.0, 0.5):
        s = training_sampler(groups, MMTrainConfig(alpha=alpha, batch_size=32))
        assert isinstance(s, HybridBatchSampler)
        for batch in list(s)[:20]:
            a = {x for _, x, _ in batch}; same = [x == y for _, x, y in batch]
            assert len({g for g, _, _ in batch}) == len(batch)          # one item per image
            assert (all(same) and len(a) == 1) or not any(same)          # mono: one language, a = b; X-Y: a != b
            if alpha == 1: assert all(same)
            if alpha == 0: assert not any(same)

def test_training_counts_batch_types_and_english_only(names, templates):
    train, _ = split_classes(names, 0.3, 0)
    tab = caption_table(names, templates, train[:200], photo_templates(templates, 2))
    rng = np.random.default_rng(0)
    bank = CaptionBank.from_table(tab, rng.normal(size=(len(tab), 16)).astype(np.float32))
    feats = rng.normal(size=(1000, 24)).astype(np.float32)
    groups = tab[["group", "lang"]].drop_duplicates()
    r = train_projection(MMTrainConfig(alpha=0.0, batch_size=16, steps=12, dim=8), feats, bank, groups)
    assert r.batch_types == {"x_x_mono": 0, "x_y": 12} and len(r.losses) == 12
    r = train_projection(MMTrainConfig(alpha=1.0, batch_size=16, steps=5, dim=8, langs=["EN"]), feats, bank, groups)
    assert r.batch_types == {"x_x_mono": 5, "x_y": 0}
    ra, rb = bank.pick([(int(train[0]), "EN", "EN")] * 10, rng)
    assert all(x != y for x, y in zip(ra, rb))                          # mono captions: two different templates

# --- retrieval metrics agree with the text evaluator -------------------------------------------

def _ranks(S, positive):
    "1-based rank of the positive column of each row (ties broken by index)."
    order = np.argsort(-S, axis=1, kind="stable")
    return np.array([int(np.flatnonzero(o == p)[0]) + 1 for o, p in zip(order, positive)])

def test_retrieval_metrics_match_direct_ranking():
    rng = np.random.default_rng(3)
    classes, langs, n = np.array([2, 5, 8, 13, 21, 34]), ["EN", "DE", "JA"], 6
    img, cap = rng.normal(size=(n, 5)).astype(np.float32), rng.normal(size=(3 * n, 5)).astype(np.float32)
    i2c = lareqa_metrics(image_caption_pool(classes, langs), img, cap)
    c2i = lareqa_metrics(caption_image_pool(classes, langs), cap, img)
    c2c = lareqa_metrics(caption_pool(classes, langs), cap, cap)
    i2t = recall_by_lang(i2c.per_question, "pool_lang", "i2t")
    t2i = recall_by_lang(c2i.per_question, "query_lang", "t2i")
    cross = cross_map_by_lang(c2c.by_pair)
    for k, l in enumerate(langs):
        block = cap[k * n:(k + 1) * n]
        ri, rt = _ranks(img @ block.T, np.arange(n)), _ranks(block @ img.T, np.arange(n))
        for K in (1, 5, 10):
            assert i2t.loc[l, f"i2t_r{K}"] == pytest.approx(np.mean(ri <= K))
            assert t2i.loc[l, f"t2i_r{K}"] == pytest.approx(np.mean(rt <= K))
        aps = [np.mean([average_precision([r]) for r in _ranks(block @ cap[j * n:(j + 1) * n].T, np.arange(n))])
               for j in range(3) if j != k]
        assert cross[l] == pytest.approx(np.mean(aps))
    # pooled image -> captions of all languages: AP over the 3 relevant captions among 18
    order = np.argsort(-(img @ cap.T), axis=1, kind="stable")
    aps = [average_precision(np.flatnonzero(np.isin(o, np.arange(3) * n + i)) + 1) for i, o in enumerate(order)]
    assert i2c.scores["multi_map"] == pytest.approx(np.mean(aps))

# --- towers and caches -------------------------------------------------------------------------

def test_image_features_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRID_BATCH_CACHE", str(tmp_path))
    files = image_files()[:3]
    a = image_features(files)
    cached = list((tmp_path/"multimodal"/"images").glob("*.safetensors"))
    assert a.shape == (3, 1280) and len(cached) == 1
    np.testing.assert_array_equal(a, image_features(files))             # read back from the cache
    np.testing.assert_allclose(a, image_features(files, cache=False), rtol=1e-5, atol=1e-5)
    assert not list((tmp_path/"multimodal"/"images").glob(".*part"))    # no partial files left

def test_caption_cache_is_content_addressed(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRID_BATCH_CACHE", str(tmp_path))
    calls = []
    class Fake:
        max_seq_length = 0
        def encode(self, texts, **kw):
            calls.append(list(texts)); return np.array([[len(t), 1.0] for t in texts], np.float32)
    monkeypatch.setattr(mm, "load_encoder", lambda *a, **k: Fake())
    e1 = caption_embeddings(["a photo of a cat .", "ein Foto"])
    e2 = caption_embeddings(["a photo of a cat .", "ein Foto"])
    caption_embeddings(["ein Foto"])
    assert len(calls) == 2 and calls[0][0].startswith("query: ")
    np.testing.assert_array_equal(e1, e2); np.testing.assert_allclose(np.linalg.norm(e1, axis=1), 1, rtol=1e-6)

def test_config_overrides_do_not_touch_presets():
    base = multimodal_config("quick")
    s = _with_overrides(base, [0, 1], 3)
    assert [v.alpha for v in s.variants] == [0.0, 1.0] and s.seeds == [0, 1, 2] and s.name == "quick-sweep"
    assert multimodal_config("quick").seeds == base.seeds and len(multimodal_config("quick").variants) == 4

@pytest.mark.slow
def test_mini_study_writes_results(tmp_path):
    cfg = mm.MultimodalConfig("mini", langs=["EN", "DE", "ZH"], train_templates=2, eval_templates=2, seeds=[0],
                              variants=mm.MM_VARIANTS[:2], train=dict(steps=30, batch_size=32))
    doc = mm.run_multimodal(cfg, tmp_path)
    assert {"results.json", "runs.csv", "per_language.csv", "tradeoff_cross_map.png"} <= {p.name for p in tmp_path.iterdir()}
    assert len(doc["runs"]) == 2 and all(0 <= r["scores"]["mono_r1"] <= 1 for r in doc["runs"])
