"""Budget studies: one constant-LR run per (direction, variant, seed) evaluated at every budget, each budget saved as
it is evaluated, and a study killed between budgets resumes inside the run to the same numbers."""
import json, shutil
from pathlib import Path
from unittest import mock
import pytest
import hybrid_batch.tradeoff as T
from hybrid_batch.tradeoff import StudyConfig, Variant, run_study, load_results, at_budget, budget_table, summary_table

TRAIN = dict(model="tiny", langs=["en", "de"], batch_size=4, max_length=32, eval_every=2, valid_batches=1, warmup_steps=1,
             lr=1e-3, trim_vocab=True, train_layers=1, cache_frozen=True, hard_negatives=True, checkpoint_every=2)

def _cfg(**kw):
    return StudyConfig("toy-budget", [Variant("X-Y", "x_y", 0.0), Variant("hybrid", "hybrid", 0.5)], seeds=[0],
                       directions=[("xquad", "mlqa-r")], train=dict(TRAIN), eval_langs={"mlqa-r": ["de", "es"]},
                       eval_batch_size=128, eval_max_length=32, shared_prefix=True, **{"budgets": [2, 6], "n_boot": 200, **kw})

class Killed(BaseException): pass

def _scores(doc): return {T._run_key(r): r["scores"]["multi_map"] for r in doc["runs"]}

def test_budget_study_runs_resumes_and_reports(tmp_path):
    full = run_study(_cfg(), tmp_path/"full", progress=False)
    keys = {T._run_key(r) for r in full["runs"]}
    assert keys == {("xquad→mlqa-r", "zero-shot", None, None)} | {("xquad→mlqa-r", v, 0, b) for v in ("X-Y", "hybrid") for b in (2, 6)}
    assert not (tmp_path/"full"/"_work").exists() or not any((tmp_path/"full"/"_work").iterdir())
    assert [r["train"]["steps"] for r in full["runs"] if r.get("budget")] == [2, 6, 2, 6]
    # the runs at budget 2 differ from those at 6: the model is evaluated *at* the step
    s = _scores(full)
    assert s[("xquad→mlqa-r", "hybrid", 0, 2)] != s[("xquad→mlqa-r", "hybrid", 0, 6)]
    t = budget_table(full)
    assert t["seeds"]["n"].tolist() == [1, 1, 1, 1]
    assert len(summary_table(at_budget(full, 6))) == 3
    md = (tmp_path/"full"/"results.md").read_text()
    assert "## After 2 steps" in md and "## After 6 steps" in md
    assert (tmp_path/"full"/"figures"/"xquad_to_mlqa-r_budget.png").exists()
    # killed right after saving hybrid's first budget: the resumed study continues inside that run
    real, calls = T._save_results, []
    def dying(out, cfg, runs):
        real(out, cfg, runs); calls.append(1)
        if runs[-1]["variant"] == "hybrid" and runs[-1].get("budget") == 2: raise Killed()
    with mock.patch.object(T, "_save_results", dying), pytest.raises(Killed): run_study(_cfg(), tmp_path/"resumed", progress=False)
    assert any((tmp_path/"resumed"/"_work").iterdir())            # the hybrid run's checkpoint is waiting
    resumed = run_study(_cfg(), tmp_path/"resumed", progress=False)
    assert _scores(resumed) == _scores(full)
    with pytest.raises(ValueError, match=r"different study config \(fields \['budgets'\]\)"):
        run_study(_cfg(budgets=[2, 4]), tmp_path/"full", progress=False)

def test_old_results_without_new_fields_still_resume(tmp_path):
    "A results.json written before `budgets` existed is read as budgets=None, not refused."
    out = tmp_path/"old"; out.mkdir()
    cfg = _cfg(budgets=None)
    study = json.loads(json.dumps(T.json_safe(T.asdict(cfg)))); del study["budgets"]
    (out/"results.json").write_text(json.dumps({"study": study, "versions": {}, "runs": []}))
    assert T._resumable_runs(out, cfg) == []
