"The README's main job, `hybrid-batch reproduce --config quick --out runs/quick`, gives the committed numbers again."
import json, math
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bit-exact on the CPU kernels (`versions()["cpu"]`: AVX2, AVX512, ...) that wrote the committed file. Another kernel
# set rounds float32 sums differently: measured on AVX512 against the committed quick study (written before the field
# existed), validation losses moved by up to 3.6e-7, mAPs by up to 6e-6 and rank distances by one rank of one question
# (1/1024 and 1/595), from near-ties breaking the other way. Then a score may move by a few such ties, no more.
# Each run records the machine that made it (`made_on`); runs written before that field fall back to the document's.
def _cpu(doc, rec): return (rec.get("made_on") or {}).get("cpu", doc["versions"].get("cpu"))

def _tolerance(fresh:tuple, committed:tuple, score=None)->float: # each a (results document, run record) pair
    cpu = _cpu(*committed)
    if cpu is not None and cpu == _cpu(*fresh): return 1e-12
    if score is None: return 1e-5                         # a validation loss
    return 0.05 if score == "rank_distance" else 5e-3    # ranks; scores in [0, 1]

def test_tolerance_follows_each_run():
    "Bit-exact only where both runs were made on the same CPU kernels; a run's own `made_on` wins over the document's."
    avx2, none = {"versions": {"cpu": "AVX2"}}, {"versions": {}}
    assert _tolerance((avx2, {"made_on": {"cpu": "AVX512"}}), (avx2, {"made_on": {"cpu": "AVX512"}})) == 1e-12
    assert _tolerance((avx2, {}), (avx2, {"made_on": {"cpu": "AVX512"}})) == 1e-5
    assert _tolerance((avx2, {}), (avx2, {}), "mono_map") == 1e-12
    assert _tolerance((none, {}), (none, {}), "mono_map") == 5e-3 and _tolerance((none, {}), (none, {}), "rank_distance") == .05

def _same(new:list, old:list, tol:float)->bool:
    return len(new) == len(old) and all(math.isclose(a, b, rel_tol=0, abs_tol=tol) for a, b in zip(new, old))
FRESH, COMMITTED = ROOT/"runs"/"quick"/"results.json", ROOT/"results"/"quick"/"results.json"

def _runs(path):
    doc = json.loads(path.read_text())
    return doc, {(r["direction"], r["variant"], r["seed"]): r for r in doc["runs"]}

@pytest.fixture(scope="module")
def fresh():
    if not FRESH.exists(): pytest.skip(f"{FRESH.relative_to(ROOT)} missing: run the README's main job first (.ci/run does)")
    return _runs(FRESH)

def test_fresh_run_is_complete(fresh):
    "Every (direction, variant, seed) of the quick preset was run and reported."
    doc, runs = fresh
    committed_doc, committed = _runs(COMMITTED)
    assert set(runs) == set(committed)
    for name in ("results.md", "report.html"): assert (FRESH.parent/name).stat().st_size > 0, name
    assert list((FRESH.parent/"figures").glob("*.png")), "no figures written"

def test_same_seed_same_numbers(fresh):
    "A rerun with the same seeds reproduces every score and every validation loss of the committed quick study."
    doc, runs = fresh
    committed_doc, committed = _runs(COMMITTED)
    for key, rec in committed.items():
        new = runs[key]
        for name, v in rec["scores"].items():
            if name == "evaluation_time": continue
            tol = _tolerance((doc, new), (committed_doc, rec), name)
            assert math.isclose(new["scores"][name], v, rel_tol=0, abs_tol=tol), (key, name, new["scores"][name], v, tol)
        if "train" in rec: assert _same(new["train"]["valid_loss"], rec["train"]["valid_loss"], _tolerance((doc, new), (committed_doc, rec))), key

# --- the quick multimodal study (`.ci/run`: hybrid-batch multimodal --config quick --out runs/multimodal) ---------

MM_FRESH, MM_COMMITTED = ROOT/"runs"/"multimodal"/"results.json", ROOT/"results"/"multimodal"/"quick"/"results.json"

def _mm_runs(path):
    doc = json.loads(path.read_text())
    return doc, {(r["variant"], r["seed"], r["fold"]): r for r in doc["runs"]}

@pytest.fixture(scope="module")
def mm_fresh():
    if not MM_FRESH.exists(): pytest.skip(f"{MM_FRESH.relative_to(ROOT)} missing: run the quick multimodal study first (.ci/run does)")
    return _mm_runs(MM_FRESH)

def test_multimodal_quick_same_numbers(mm_fresh):
    "A rerun of the quick multimodal study reproduces every run's scores, validation losses and per-language table."
    doc, runs = mm_fresh
    committed_doc, committed = _mm_runs(MM_COMMITTED)
    assert set(runs) == set(committed) and doc["study"] == committed_doc["study"]
    for key, rec in committed.items():
        new = runs[key]
        for name, v in rec["scores"].items():
            tol = _tolerance((doc, new), (committed_doc, rec), name)
            assert math.isclose(new["scores"][name], v, rel_tol=0, abs_tol=tol), (key, name, new["scores"][name], v, tol)
        assert _same(new["train"]["valid_loss"], rec["train"]["valid_loss"], _tolerance((doc, new), (committed_doc, rec))), key
        assert new["text"] == rec["text"] or all(math.isclose(new["text"][k], rec["text"][k], abs_tol=_tolerance((doc, new), (committed_doc, rec), k))
                                                 for k in rec["text"]), key
    for name in ("runs.csv", "per_language.csv", "bootstrap.csv", "tradeoff_cross_map.png"):
        assert (MM_FRESH.parent/name).stat().st_size > 0, name
