"Multimodal: CLIPScore, class folds, the package sampler and training loop for LiT, ragged retrieval metrics, saved models, caches."
import inspect
import numpy as np, pandas as pd
import pytest, torch
import hybrid_batch.lit as lit, hybrid_batch.multimodal as mm
from hybrid_batch.evaluate import average_precision, lareqa_metrics
from hybrid_batch.sampler import HybridBatchSampler
from hybrid_batch.train import embed
from hybrid_batch.images import (load_class_names, load_templates, class_folds, fold_classes, assert_classes_disjoint,
    photo_templates, CaptionData, image_features, image_files, LANGS)
from hybrid_batch.lit import (clip_score, clipscore_table, caption_batches, LitConfig, check_lit, setup_lit_run, train_lit,
    load_lit_model, fold_test, evaluate_lit, image_caption_pool, caption_image_pool, caption_pool, recall_by_lang, cross_map_by_lang)
from hybrid_batch.multimodal import multimodal_config, lit_config, _with_overrides
from hybrid_batch.study import versions

LANGS3 = ["EN", "DE", "ZH"]

@pytest.fixture(scope="module")
def names(): return load_class_names()

@pytest.fixture(scope="module")
def templates(): return load_templates()

@pytest.fixture(scope="module")
def data3():
    "Real names, templates and folds of three languages; random stand-ins for the photo features (fast)."
    n, t = load_class_names(LANGS3), load_templates(LANGS3)
    feats = torch.from_numpy(np.random.default_rng(0).normal(size=(1000, 24)).astype(np.float32))
    return CaptionData(n, t, photo_templates(t, 2), feats, class_folds(n, 4, 0))

def _tiny(**kw):
    return LitConfig(**{"model": "tiny", "caption_langs": LANGS3, "slots": 2, "max_steps": 6, "batch_size": 8, "eval_every": 3,
                        "valid_batches": 2, "train_layers": 1, "max_length": 32, "dim": 16, **kw})

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

def test_clipscore_table_matched_mismatched_ragged():
    img = np.eye(4)
    rows = pd.DataFrame({"group": [0, 1, 2, 3, 1, 3], "lang": ["EN"] * 4 + ["DE"] * 2})   # German names classes 1 and 3
    t = clipscore_table(img, np.vstack([img, -img[[1, 3]]]), rows, np.arange(4))
    assert t.loc["EN", "matched"] == 2.5 and t.loc["EN", "mismatched"] == 0 and t.loc["DE", "matched"] == 0
    assert t.loc["DE", "vs_en"] == -2.5

# --- data and folds ----------------------------------------------------------------------------

def test_coverage_and_names(names):
    assert list(names.columns) == LANGS and len(names) == 1000
    assert names.EN.notna().all() and names.TR.notna().sum() < names.DE.notna().sum()

@pytest.mark.parametrize("seed", [0, 1, 7])
def test_every_class_is_a_test_class_once(names, seed):
    folds = class_folds(names, 4, seed)
    assert sorted(np.concatenate(folds).tolist()) == list(range(1000))
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for k in range(4):
        tr, va, te = fold_classes(folds, k, 0.1, seed)
        assert_classes_disjoint(np.r_[tr, va], te); assert_classes_disjoint(tr, va)
        assert len(tr) + len(va) + len(te) == 1000 and len(va) == round(0.1 * (1000 - len(te)))
    np.testing.assert_array_equal(folds[1], class_folds(names, 4, seed)[1])  # seeded

def test_fold_errors(names):
    with pytest.raises(ValueError, match="n_folds"): class_folds(names, 1)
    with pytest.raises(ValueError, match=r"fold must be in \[0, 4\)"): fold_classes(class_folds(names), 5)
    with pytest.raises(ValueError, match="both train and test"): assert_classes_disjoint(np.array([4, 5]), np.array([5]))

def test_bad_babel_language():
    with pytest.raises(ValueError, match="no language 'QQ'"): load_class_names(["EN", "QQ"])

def test_config_checks():
    with pytest.raises(ValueError, match="langs"): check_lit(LitConfig(langs=["QQ"]))
    with pytest.raises(ValueError, match="train_layers must be set"): check_lit(LitConfig(train_layers=None))
    with pytest.raises(ValueError, match="head_lr"): check_lit(LitConfig(head_lr=0))
    with pytest.raises(ValueError, match="batch_size must be int"): check_lit(LitConfig(batch_size="8"))

# --- sampler reuse -----------------------------------------------------------------------------

def test_module_has_no_sampler_of_its_own(data3):
    "The study draws its batches with the package's sampler: no Sampler class of its own."
    own = [n for m in (lit, mm) for n, obj in vars(m).items() if inspect.isclass(obj)
           and issubclass(obj, torch.utils.data.Sampler) and obj.__module__ == m.__name__]
    assert own == [] and type(caption_batches(_tiny(), data3, data3.folds[0]).sampler) is HybridBatchSampler

@pytest.mark.parametrize("alpha", [1.0, 0.0, 0.5])
def test_batches_follow_alpha_on_real_groups(data3, alpha):
    tr, _, te = fold_classes(data3.folds, 0)
    b = caption_batches(_tiny(alpha=alpha, batch_size=32), data3, tr)
    kinds = {all(x == y for _, x, y in items) for items in list(b.sampler)[:20]}
    assert kinds == ({True} if alpha == 1 else {False} if alpha == 0 else {True, False}), kinds  # α = 0.5: both kinds in 20 batches
    for items, batch in zip(list(b.sampler)[:20], list(b)[:20]):
        same = [x == y for _, x, y in items]
        assert len({g for g, _, _ in items}) == len(items)               # one item per photo
        assert all(same) or not any(same)                                 # mono: a = b throughout; X-Y: a != b throughout
        if alpha == 1: assert all(same)
        if alpha == 0: assert not any(same)
        assert batch["image"].tolist() == [g for g, _, _ in items] and not set(batch["image"].tolist()) & set(te.tolist())
        if all(same): assert all(q != p for q, p in zip(batch["query"], batch["passage"]))  # two different templates

def test_english_only_and_template_draws_replay(data3):
    tr, _, _ = fold_classes(data3.folds, 0)
    en = caption_batches(_tiny(strategy="x_x_mono", langs=["EN"]), data3, tr)
    caps = {data3.caption(g, "EN", s) for g in tr for s in range(2)}
    assert all(t in caps for batch in list(en)[:10] for t in batch["query"] + batch["passage"])
    a, b = caption_batches(_tiny(), data3, tr), caption_batches(_tiny(), data3, tr)
    a.set_epoch(3); b.set_epoch(3)
    assert [x["query"] for x in a] == [x["query"] for x in b]            # a function of seed and epoch

# --- retrieval metrics agree with direct ranking, with ragged coverage ------------------------

def _ranks(S, positive):
    "1-based rank of the positive column of each row (ties broken by index)."
    order = np.argsort(-S, axis=1, kind="stable")
    return np.array([int(np.flatnonzero(o == p)[0]) + 1 for o, p in zip(order, positive)])

def test_retrieval_metrics_match_direct_ranking():
    rng = np.random.default_rng(3)
    classes, n = np.array([2, 5, 8, 13, 21, 34]), 6
    named = {"EN": classes, "DE": classes[[0, 2, 3, 5]], "JA": classes[[1, 2, 4]]}   # ragged, like Babel-ImageNet
    rows = pd.DataFrame([(g, l) for l, gs in named.items() for g in gs], columns=["group", "lang"])
    img, cap = rng.normal(size=(n, 5)).astype(np.float32), rng.normal(size=(len(rows), 5)).astype(np.float32)
    i2c = lareqa_metrics(image_caption_pool(classes, rows), img, cap)
    c2i = lareqa_metrics(caption_image_pool(rows, classes), cap, img)
    c2c = lareqa_metrics(caption_pool(rows), cap, cap)
    i2t, t2i = recall_by_lang(i2c.per_question, "pool_lang", "i2t"), recall_by_lang(c2i.per_question, "query_lang", "t2i")
    cross = cross_map_by_lang(c2c.by_pair)
    at = {int(c): i for i, c in enumerate(classes)}
    for l, gs in named.items():
        block, ims = cap[(rows.lang == l).to_numpy()], img[[at[g] for g in gs]]
        ri, rt = _ranks(ims @ block.T, np.arange(len(gs))), _ranks(block @ img.T, [at[g] for g in gs])
        for K in (1, 5):
            assert i2t.loc[l, f"i2t_r{K}"] == pytest.approx(np.mean(ri <= K))
            assert t2i.loc[l, f"t2i_r{K}"] == pytest.approx(np.mean(rt <= K))
        aps = []   # X→Y: the captions of X whose class Y names, ranked among Y's captions
        for m, hs in named.items():
            if m == l: continue
            other = cap[(rows.lang == m).to_numpy()]
            for i, g in enumerate(gs):
                if g in hs: aps.append((m, average_precision([_ranks(block[[i]] @ other.T, [list(hs).index(g)])[0]])))
        per_pair = pd.DataFrame(aps, columns=["m", "ap"]).groupby("m").ap.mean()
        assert cross[l] == pytest.approx(per_pair.mean())
    order = np.argsort(-(img @ cap.T), axis=1, kind="stable")   # pooled: AP over the class's captions of every language
    aps = [average_precision(np.flatnonzero(np.isin(o, np.flatnonzero(rows.group == c))) + 1) for c, o in zip(classes, order)]
    assert i2c.scores["multi_map"] == pytest.approx(np.mean(aps))

# --- LiT through the package's training loop ---------------------------------------------------

def test_lit_run_trains_saves_and_reloads(data3, tmp_path):
    r = train_lit(_tiny(strategy="x_y", output_dir=str(tmp_path/"run")), data3, progress=False)
    assert r.report["batch_types"]["x_x_mono"] == 0 and r.state.step == 6
    folder = tmp_path/"run"/"model"
    assert {"README.md", "image_head.safetensors", "text", "training.json"} <= {p.name for p in folder.iterdir()}
    card = (folder/"README.md").read_text()
    assert "x_y (α = 0)" in card and "fold 0 of 4" in card and "full vocabulary" in card
    m = load_lit_model(folder)
    assert m.text[0].auto_model.get_input_embeddings().num_embeddings == 126  # the tiny tokenizer's full vocabulary
    texts = ["a photo of a goldfish .", "ein Foto von einem Hai ."]
    np.testing.assert_allclose(m.encode_captions(texts), r.model.encode_captions(texts), atol=1e-6)
    x = data3.features[:3]
    with torch.no_grad(): np.testing.assert_allclose(m.encode_image(x).numpy(), r.model.encode_image(x).numpy(), atol=1e-6)

def test_lit_resume_is_exact(data3, tmp_path):
    full = train_lit(_tiny(), data3, progress=False)
    cfg = _tiny(output_dir=str(tmp_path/"r"), checkpoint_every=3)
    assert train_lit(cfg, data3, progress=False, stop_at=3) is None
    with pytest.raises(ValueError, match="already holds a run"): train_lit(cfg, data3, progress=False)
    resumed = train_lit(cfg, data3, progress=False, resume=True)
    assert resumed.history.valid_loss.dropna().tolist() == full.history.valid_loss.dropna().tolist()
    for (n, a), b in zip(full.model.named_parameters(), resumed.model.parameters()): assert torch.equal(a, b), n

def test_heads_learn_at_their_own_rate(data3):
    run = setup_lit_run(_tiny(lr=1e-5, head_lr=1e-2), data3)
    lrs = sorted(g["initial_lr"] for g in run.opt.param_groups)
    assert lrs == [1e-5, 1e-2] and sum(len(g["params"]) for g in run.opt.param_groups) == \
        sum(p.requires_grad for p in run.model.parameters())
    locked = setup_lit_run(_tiny(train_layers=0), data3)
    trained = {n.split(".")[0] + "." + n.split(".")[1] for n, p in locked.model.named_parameters() if p.requires_grad and "pooler" not in n}
    assert trained == {"text.3", "image.1"}        # locked text tower: only the two projections (BERT's pooler is never used)

def test_cached_evaluation_equals_full_path(data3):
    run = setup_lit_run(_tiny(), data3)
    ft = fold_test(data3, data3.folds[0])
    texts = ft.captions.text.tolist()
    ca, cb = (np.asarray(lit._captions_in_space(run.model, texts, enc)) for enc in (run.encode, embed))
    np.testing.assert_allclose(ca, cb, atol=1e-5)          # the two paths agree to float rounding
    a = evaluate_lit(run.model, ft, data3.features, run.encode)[0]
    b = evaluate_lit(run.model, ft, data3.features, embed)[0]
    for k in a:
        if k.startswith("clip_"): assert a[k] == pytest.approx(b[k], abs=1e-6), k
        # ranks: the tiny model's trimmed vocabulary maps many captions to the same pieces (exact ties between
        # captions), and rounding that differs by CPU breaks those ties either way; 1% still catches a wrong path
        else: assert a[k] == pytest.approx(b[k], rel=1e-2, abs=1e-3), k

def test_fold_test_covers_named_pairs(data3):
    ft = fold_test(data3, data3.folds[1])
    assert len(ft.captions) == int(data3.names.loc[data3.folds[1]].notna().sum().sum())
    assert len(ft.ensemble) == 2 * len(ft.captions) and ft.captions.text.iloc[0].startswith("a photo of a ")

# --- caches and configs ------------------------------------------------------------------------

def test_image_features_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRID_BATCH_CACHE", str(tmp_path))
    files = image_files()[:3]
    a = image_features(files)
    cached = list((tmp_path/"multimodal"/"images").glob("*.safetensors"))
    assert a.shape == (3, 1280) and len(cached) == 1
    np.testing.assert_array_equal(a, image_features(files))             # read back from the cache
    np.testing.assert_allclose(a, image_features(files, cache=False), rtol=1e-5, atol=1e-5)
    assert not list((tmp_path/"multimodal"/"images").glob(".*part"))    # no partial files left

def test_config_overrides_do_not_touch_presets():
    base = multimodal_config("quick")
    s = _with_overrides(base, [0, 1], 3)
    assert [v.alpha for v in s.variants] == [0.0, 1.0] and s.seeds == [0, 1, 2] and s.name == "quick-sweep"
    assert multimodal_config("quick").seeds == base.seeds and len(multimodal_config("quick").variants) == 4

def test_study_run_configs():
    cfg = multimodal_config("full")
    en = lit_config(cfg, mm.EN_ONLY, 1, 2)
    assert (en.strategy, en.langs, en.seed, en.fold) == ("x_x_mono", ["EN"], 1, 2)
    assert lit_config(cfg, mm.MM_VARIANTS[3], 0, 0, locked=True).train_layers == 0

@pytest.mark.slow
def test_mini_study_writes_and_resumes(tmp_path):
    cfg = mm.MultimodalConfig("mini", langs=LANGS3, slots=2, folds=[0], seeds=[0], variants=mm.MM_VARIANTS[2:], locked=["hybrid"],
                              text_pool=None, train=dict(max_steps=20, batch_size=32, eval_every=10))
    doc = mm.run_multimodal(cfg, tmp_path)
    assert {"results.json", "runs.csv", "per_language.csv", "bootstrap.csv", "tradeoff_cross_map.png"} <= {p.name for p in tmp_path.iterdir()}
    assert [r["variant"] for r in doc["runs"]] == ["X-Y", "hybrid", "hybrid, locked text"]
    assert all(0 <= r["scores"]["mono_r1"] <= 1 for r in doc["runs"]) and len(list((tmp_path/"items").glob("*.csv"))) == 3
    assert all(r["made_on"]["cpu"] == versions()["cpu"] for r in doc["runs"])
    again = mm.run_multimodal(cfg, tmp_path)                                    # resumed: nothing left to run
    assert [r["scores"] for r in again["runs"]] == [r["scores"] for r in doc["runs"]]
    with pytest.raises(ValueError, match="different study config"): mm.run_multimodal(mm.MultimodalConfig(**{**cfg.__dict__, "slots": 3}), tmp_path)
