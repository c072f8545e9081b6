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
