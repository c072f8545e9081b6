"The README's main job, `hybrid-batch reproduce --config quick --out runs/quick`, gives the committed numbers again."
import json, math
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
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
    _, committed = _runs(COMMITTED)
    for key, rec in committed.items():
        new = runs[key]
        for name, v in rec["scores"].items():
            if name == "evaluation_time": continue
            assert math.isclose(new["scores"][name], v, rel_tol=0, abs_tol=1e-12), (key, name, new["scores"][name], v)
        if "train" in rec: assert new["train"]["valid_loss"] == rec["train"]["valid_loss"], key

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
            assert math.isclose(new["scores"][name], v, rel_tol=0, abs_tol=1e-12), (key, name, new["scores"][name], v)
        assert new["train"]["valid_loss"] == rec["train"]["valid_loss"], key
        assert new["text"] == rec["text"] or all(math.isclose(new["text"][k], rec["text"][k], abs_tol=1e-12) for k in rec["text"]), key
    for name in ("runs.csv", "per_language.csv", "bootstrap.csv", "tradeoff_cross_map.png"):
        assert (MM_FRESH.parent/name).stat().st_size > 0, name
