"""Budget studies: one constant-LR run per (direction, variant, seed) evaluated at every budget, each budget saved as
it is evaluated, and a study killed between budgets resumes inside the run to the same numbers."""
import json
from unittest import mock
import pytest
import hybrid_batch.tradeoff as T
from hybrid_batch.study import Variant, load_study, made_on
from hybrid_batch.tradeoff import StudyConfig, run_study, at_budget, budget_table, summary_table

TRAIN = dict(model="tiny", langs=["en", "de"], batch_size=4, max_length=32, eval_every=2, valid_batches=1, warmup_steps=1,
             lr=1e-3, trim_vocab=True, train_layers=1, cache_frozen=True, hard_negatives=True, checkpoint_every=2)

def _cfg(**kw):
    return StudyConfig(**{"name": "toy-budget", "variants": [Variant("X-Y", "x_y", 0.0), Variant("hybrid", "hybrid", 0.5)],
                          "seeds": [0], "directions": [("xquad", "mlqa-r")], "train": dict(TRAIN),
                          "eval_langs": {"mlqa-r": ["de", "es"]}, "eval_batch_size": 128, "eval_max_length": 32,
                          "shared_prefix": True, "budgets": [2, 6], "n_boot": 200, **kw})

class Killed(BaseException): pass

def _scores(doc): return {T._run_key(r): r["scores"]["multi_map"] for r in doc["runs"]}

def test_budget_study_runs_resumes_and_reports(tmp_path):
    full = run_study(_cfg(), tmp_path/"full", progress=False)
    keys = {T._run_key(r) for r in full["runs"]}
    assert keys == {("xquad→mlqa-r", "zero-shot", None, None)} | {("xquad→mlqa-r", v, 0, b) for v in ("X-Y", "hybrid") for b in (2, 6)}
    assert not (tmp_path/"full"/"_work").exists() or not any((tmp_path/"full"/"_work").iterdir())
    assert [r["train"]["steps"] for r in full["runs"] if r.get("budget")] == [2, 6, 2, 6]
    assert all(r["made_on"] == made_on() for r in full["runs"])      # each run says what machine made it
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

def test_top_budget_in_a_second_stage(tmp_path):
    """With `top_budget_seeds`, every seed first runs to the budgets all seeds share; then the chosen seeds go on from
    their checkpoints to the largest budget, with the numbers of one uninterrupted run."""
    # (no shared prefix: the tiny encoder's random weights depend on the seed, so seeds have no common base)
    staged = run_study(_cfg(seeds=[0, 1], budgets=[2, 4, 6], top_budget_seeds=[0], zero_shot=False, shared_prefix=False),
                       tmp_path/"staged", progress=False)
    order = [(r["seed"], r["variant"], r["budget"]) for r in staged["runs"]]
    assert order == [(0, "X-Y", 2), (0, "X-Y", 4), (0, "hybrid", 2), (0, "hybrid", 4),
                     (1, "X-Y", 2), (1, "X-Y", 4), (1, "hybrid", 2), (1, "hybrid", 4), (0, "X-Y", 6), (0, "hybrid", 6)]
    assert not any((tmp_path/"staged"/"_work").iterdir())         # every run finished, every checkpoint discarded
    straight = run_study(_cfg(budgets=[2, 4, 6], zero_shot=False, shared_prefix=False), tmp_path/"straight", progress=False)
    assert {k: v for k, v in _scores(staged).items() if k[2] == 0} == _scores(straight)
    t = budget_table(staged)
    assert t["seeds"]["n"].xs(6, level="budget").tolist() == [1, 1] and t["seeds"]["n"].xs(4, level="budget").tolist() == [2, 2]

def test_paused_after_the_shared_budgets(tmp_path):
    "Stopped between the stages, seed 0 waits at its last shared budget in `_work` and the rerun only adds the top budget."
    cfg = _cfg(seeds=[0, 1], budgets=[2, 4], top_budget_seeds=[0], zero_shot=False, shared_prefix=False)
    real = T.run_budgets
    def first_stage_only(*a, upto=None, **kw):
        if upto == 4: raise Killed()
        return real(*a, upto=upto, **kw)
    with mock.patch.object(T, "run_budgets", lambda *a, **kw: first_stage_only(*a[:-1], upto=a[-1], **kw)), pytest.raises(Killed):
        run_study(cfg, tmp_path/"s", progress=False)
    assert len(load_study(tmp_path/"s")["runs"]) == 4           # both seeds at budget 2
    assert sorted(p.name for p in (tmp_path/"s"/"_work").iterdir()) == ["xquad_to_mlqa-r-X-Y-seed0", "xquad_to_mlqa-r-hybrid-seed0"]
    done = run_study(cfg, tmp_path/"s", progress=False)
    assert [(r["seed"], r["budget"]) for r in done["runs"]][4:] == [(0, 4), (0, 4)]

def test_alpha_sweep_adopts_the_strategy_runs_of_a_budget_study(tmp_path):
    "X-Y, hybrid and X-X-mono at a budget are the sweep's α=0, 0.5 and 1: adopted with their scores, not retrained."
    src = _cfg(variants=list(T.PAPER_VARIANTS), budgets=[2, 4], zero_shot=False)
    budget_doc = run_study(src, tmp_path/"budget", progress=False)
    sweep = T.sweep_config([0, 0.25, 0.5, 1], seeds=[0], base=src, budget=4)
    assert T.adopt_runs(tmp_path/"sweep", sweep, tmp_path/"budget") == 3
    assert T.adopt_runs(tmp_path/"sweep", sweep, tmp_path/"budget") == 0     # a second call adds nothing
    trained = []
    real = T.run_budgets
    with mock.patch.object(T, "run_budgets", lambda cfg, d, v, *a, **kw: trained.append(v.label) or real(cfg, d, v, *a, **kw)):
        doc = run_study(sweep, tmp_path/"sweep", progress=False)
    assert trained == ["α=0.25"]
    by = {r["variant"]: r for r in doc["runs"]}
    want = {r["variant"]: r["scores"] for r in budget_doc["runs"] if r["budget"] == 4}
    assert by["α=0"]["scores"] == want["X-Y"] and by["α=1"]["scores"] == want["X-X-mono"] and by["α=0.5"]["scores"] == want["hybrid"]
    assert by["α=0"]["adopted_from"] == {"study": "toy-budget", "variant": "X-Y"} and "adopted_from" not in by["α=0.25"]
    b = T.bootstrap_table(tmp_path/"sweep", doc, target="α=0.5", n=200)
    assert set(b.comparison) == {"α=0.5 − α=0", "α=0.5 − α=0.25", "α=0.5 − α=1"}
    other = T.sweep_config([0.5], seeds=[0], base=_cfg(eval_max_length=48, budgets=[2, 4]), budget=4)
    with pytest.raises(ValueError, match=r"differs from 'sweep-toy-budget-4' in \['eval_max_length'\]"):
        T.adopt_runs(tmp_path/"other", other, tmp_path/"budget")

@pytest.mark.parametrize("kw", [dict(top_budget_seeds=[5]), dict(top_budget_seeds=[0], budgets=None), dict(top_budget_seeds=[0], budgets=[4])])
def test_top_budget_seeds_checked(kw, tmp_path):
    "A top-budget seed that is not run, or a top budget that does not exist, is refused before anything is written."
    with pytest.raises(ValueError, match="top_budget_seeds"): run_study(_cfg(**kw), tmp_path/"s", progress=False)
    assert not (tmp_path/"s").exists()

def test_a_study_resumed_on_other_hardware_keeps_its_precision(tmp_path):
    "Rows evaluated in fp32 are joined by fp32 rows even where bf16 is native: one precision per study, never mixed."
    kw = dict(seeds=[0], budgets=[2], fast_eval=True, zero_shot=False, shared_prefix=False, variants=[Variant("X-Y", "x_y", 0.0)])
    cfg = _cfg(**kw)   # (tiny models differ by seed: no shared prefix across seeds)
    with mock.patch.object(T, "native_bf16", lambda *a: False): run_study(cfg, tmp_path/"s", progress=False)
    more = _cfg(**kw)
    doc = json.loads((tmp_path/"s"/"results.json").read_text())
    doc["study"]["seeds"] = [0, 1]; (tmp_path/"s"/"results.json").write_text(json.dumps(doc))
    more.seeds = [0, 1]
    with mock.patch.object(T, "native_bf16", lambda *a: True): done = run_study(more, tmp_path/"s", progress=False)
    assert [r["eval_precision"] for r in done["runs"]] == ["fp32", "fp32"]
    with mock.patch.object(T, "native_bf16", lambda *a: True): fresh = run_study(cfg, tmp_path/"t", progress=False)
    assert [r["eval_precision"] for r in fresh["runs"]] == ["bf16"]       # a new study decides by its hardware
    doc = json.loads((tmp_path/"s"/"results.json").read_text()); doc["runs"][1]["eval_precision"] = "bf16"
    (tmp_path/"s"/"results.json").write_text(json.dumps(doc)); more.seeds = [0, 1, 2]
    doc["study"]["seeds"] = [0, 1, 2]; (tmp_path/"s"/"results.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="different precisions"): run_study(more, tmp_path/"s", progress=False)
