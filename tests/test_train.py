"Training: determinism, kill-and-resume with SIGKILL, and (slow) 50 real steps per strategy on the embedded encoder."
import json, signal, subprocess, sys, time
from dataclasses import asdict
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file
from hybrid_batch.train import TrainConfig, train, config_from, latest_checkpoint

TINY = dict(model="tiny", train_data="xquad", langs=["en", "de", "es", "zh"], eval_pool=None, batch_size=8,
            eval_every=10, warmup_steps=3, lr=1e-3, valid_batches=2, trim_vocab=False, max_length=48)

def _weights(folder):
    return load_file(Path(folder)/"model"/"model.safetensors")

def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    cfg = dict(TINY, max_steps=40, checkpoint_every=5, output_dir=str(tmp_path/"killed"))
    (tmp_path/"cfg.json").write_text(json.dumps(cfg))
    cmd = [str(Path(sys.executable).parent/"hybrid-batch"), "train", "--config", str(tmp_path/"cfg.json")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path/"killed"/"checkpoints"
    deadline = time.time() + 300
    while not list(ckpts.glob("step-*")) and proc.poll() is None and time.time() < deadline: time.sleep(0.05)
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert list(ckpts.glob("step-*")), "no checkpoint was written before the kill"
    step = json.loads((latest_checkpoint(tmp_path/"killed")/"state.json").read_text())["state"]["step"]
    assert step < 40 and not (tmp_path/"killed"/"model").exists(), "the run finished before it could be killed"
    subprocess.run(cmd + ["--resume"], check=True, capture_output=True)
    # the uninterrupted run in a fresh process too: same threads and environment as the killed one
    (tmp_path/"full.json").write_text(json.dumps(dict(cfg, output_dir=str(tmp_path/"full"))))
    subprocess.run(cmd[:-1] + [str(tmp_path/"full.json")], check=True, capture_output=True)
    a, b = _weights(tmp_path/"killed"), _weights(tmp_path/"full")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    hist = lambda d: [round(x, 6) for x in __import__("pandas").read_csv(d/"history.csv").loss.dropna()]
    assert hist(tmp_path/"killed") == hist(tmp_path/"full")

def test_same_seed_same_losses_other_seed_differs():
    cfg = TrainConfig(**dict(TINY, max_steps=6, checkpoint_every=0))
    a, b = train(cfg, progress=False), train(cfg, progress=False)
    c = train(TrainConfig(**dict(asdict(cfg), seed=1)), progress=False)
    assert a.history.loss.dropna().tolist() == b.history.loss.dropna().tolist()
    assert a.history.loss.dropna().tolist() != c.history.loss.dropna().tolist()

def test_strategies_produce_their_batch_types():
    for strategy, want in [("x_x_mono", {"x_x_mono"}), ("x_y", {"x_y"})]:
        r = train(TrainConfig(**dict(TINY, max_steps=3, strategy=strategy, checkpoint_every=0)), progress=False)
        assert {k for k, v in r.report["batch_types"].items() if v} == want
        pairs = [p.split("-") for p in r.report["lang_pairs"]]
        assert all((q == p) == (strategy == "x_x_mono") for q, p in pairs)

def test_bad_config_is_named(tmp_path):
    (tmp_path/"c.json").write_text(json.dumps({"stratgy": "hybrid"}))
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['stratgy'\]"):
        config_from(tmp_path/"c.json")
    with pytest.raises(ValueError, match="strategy must be"):
        config_from(strategy="mixed")

def test_leaky_run_refused():
    "A run that trains on XQuAD-R pairs and names XQuAD-R as its evaluation pool is refused before training."
    with pytest.raises(ValueError, match="overlaps the evaluation pool 'xquad-r'"):
        train(TrainConfig(**dict(TINY, train_data="xquad-r", langs=["en"], eval_pool="xquad-r", max_steps=1)), progress=False)

@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["x_x_mono", "x_y", "hybrid"])
def test_fifty_real_steps_lower_validation_loss(strategy):
    "The embedded e5-small, 50 steps on XQuAD pairs (zero-shot guard against MLQA-R), validation loss falls."
    cfg = TrainConfig(strategy=strategy, max_steps=50, eval_every=25, batch_size=16, checkpoint_every=0,
                      valid_batches=4, warmup_steps=5, max_length=64, lr=3e-5)
    r = train(cfg, progress=False)
    v = r.history.valid_loss.dropna().tolist()
    print(strategy, v, f"{r.wall_seconds:.0f} s")
    assert v[-1] < v[0]

def test_train_on_a_given_pairs_table():
    "A pairs table (e.g. machine-translated) replaces the named data set; a table without the needed columns is refused."
    from hybrid_batch.data import load_xquad
    from hybrid_batch.train import run_data
    pairs = load_xquad(["en", "es"])
    es = pairs[pairs.lang == "es"].head(200)
    tr, va, pool = run_data(TrainConfig(**TINY), es)
    assert set(tr.lang) | set(va.lang) == {"es"} and len(tr) + len(va) == 200 and pool is None
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['article'\]"):
        run_data(TrainConfig(**TINY), es.drop(columns="article"))
    r = train(TrainConfig(**dict(TINY, max_steps=3, langs=None)), progress=False, pairs=pairs[pairs.lang.isin(["en", "es"])])
    assert r.state.step == 3 and set(r.report["lang_pairs"]) == {"en-en", "en-es", "es-en", "es-es"}  # the epoch's plan: only en, es

UNSEEN = ["몇 명의 선수가 경기에 참가했나요?", "試合には何人の選手が参加しましたか?", "Πόσοι παίκτες συμμετείχαν στον αγώνα;",
          "כמה שחקנים השתתפו במשחק?", "मैच में कितने खिलाड़ियों ने भाग लिया?", "⚽🏆🎉 👍"]

def _cos(a, b): return (a*b).sum(1)

def test_saved_model_keeps_the_full_vocabulary(tmp_path):
    """The embedded e5-small trained a few real steps on en/de XQuAD with a trimmed vocabulary: the saved model equals the
    same weights on the untrimmed base (cosine >= 0.9999) on scripts the run never saw and on a pool it did not trim
    for, while the in-memory trimmed model does not (the check can fail); the folder has a model card."""
    from sentence_transformers import SentenceTransformer
    from hybrid_batch.data import load_lareqa
    from hybrid_batch.models import load_encoder
    from hybrid_batch.train import run_model, run_data, run_texts
    cfg = TrainConfig(langs=["en", "de"], eval_pool=None, batch_size=8, max_steps=3, eval_every=3, warmup_steps=1,
                      valid_batches=1, max_length=48, train_layers=2, checkpoint_every=0, output_dir=str(tmp_path/"run"))
    r = train(cfg, progress=False)
    saved = SentenceTransformer(str(tmp_path/"run"/"model"))
    base = load_encoder()
    trained = {k: v for k, v in saved.state_dict().items()}
    assert torch.equal(trained["0.model.embeddings.word_embeddings.weight"], base.state_dict()["0.model.embeddings.word_embeddings.weight"])
    base.load_state_dict(trained)
    assert len(saved.tokenizer) == len(base.tokenizer) == 250002 and saved.max_seq_length == base.max_seq_length == 512
    pool = load_lareqa("xquad-r", ["th", "el", "ru"])
    texts = UNSEEN + pool.candidates.text.sample(60, random_state=0).tolist()
    a, b = saved.encode_document(texts), base.encode_document(texts)
    assert _cos(a, b).min() >= 0.9999, _cos(a, b).min()
    assert _cos(r.model.encode_query(UNSEEN), base.encode_query(UNSEEN)).min() >= 0.9999  # what train() returns, too
    tr, va, _ = run_data(cfg)
    trimmed = run_model(cfg, run_texts(tr, va))
    trimmed.load_state_dict({k: v for k, v in trained.items() if "word_embeddings" not in k}, strict=False)
    assert _cos(trimmed.encode_document(UNSEEN), b[:len(UNSEEN)]).min() < 0.99   # a trimmed save would have failed
    card = (tmp_path/"run"/"model"/"README.md").read_text()
    for part in ["hybrid (α = 0.5)", "multilingual-e5-small", "steps: 3 of 3", "`xquad`", "de, en", "not checked against an evaluation pool"]:
        assert part in card, part
    info = json.loads((tmp_path/"run"/"model"/"training.json").read_text())
    assert info["config"]["strategy"] == "hybrid" and info["data"]["langs"] == ["de", "en"]

def test_model_card_names_the_disjoint_pool():
    from hybrid_batch.train import model_card, TrainState
    card = model_card(TrainConfig(strategy="x_y"), TrainState(step=5, best_step=5, best_loss=1.0),
                      {"train_data": "xquad", "langs": ["de", "en"], "train_pairs": 10, "valid_pairs": 2, "eval_pool": "mlqa-r"})
    assert "x_y (α = 0)" in card and "kept disjoint (no shared paragraph) from the evaluation pool `mlqa-r`" in card

def _autocast_seen(cfg, steps=2):
    "Whether each step's objective ran under CPU autocast, and the losses."
    import hybrid_batch.train as tr
    run, seen = tr.setup_run(cfg), []
    objective = run.objective
    run.objective = lambda m, b: (seen.append(torch.is_autocast_enabled("cpu")), objective(m, b))[1]
    losses = [tr._step(run, b) for b, _ in zip(run.loader, range(steps))]
    return seen, losses

def test_autocast_runs_the_step_forward_in_bf16(monkeypatch):
    "autocast=True wraps each step's forward in bfloat16 autocast (the validation loss stays fp32); off by default."
    import hybrid_batch.train as tr
    monkeypatch.setattr(tr, "native_bf16", lambda device: True)  # autocast itself runs on any CPU, only slowly without bf16
    cfg = TrainConfig(**dict(TINY, max_steps=2, checkpoint_every=0, device="cpu"))
    off, fp32 = _autocast_seen(cfg)
    on, bf16 = _autocast_seen(TrainConfig(**dict(asdict(cfg), autocast=True)))
    assert off == [False, False] and on == [True, True]
    assert all(torch.isfinite(torch.tensor(bf16))) and fp32 != bf16       # bf16 rounding changes the losses, a little
    assert max(abs(a - b) for a, b in zip(fp32, bf16)) < 0.1

def test_autocast_without_bf16_hardware_is_refused_before_loading(monkeypatch):
    import hybrid_batch.train as tr
    monkeypatch.setattr(tr, "native_bf16", lambda device: False)
    monkeypatch.setattr(tr, "run_data", lambda *a, **k: pytest.fail("data loaded before the refusal"))
    with pytest.raises(ValueError, match="autocast=True needs bfloat16 hardware .* cpu has none"):
        tr.setup_run(TrainConfig(**dict(TINY, max_steps=1, autocast=True, device="cpu")))

def test_checkpoint_from_before_a_new_config_field_resumes(tmp_path, monkeypatch):
    "A checkpoint whose config lacks a field added later (here `autocast`) resumes under that field's default."
    import hybrid_batch.train as tr
    monkeypatch.setattr(tr, "native_bf16", lambda device: True)  # reach the checkpoint check on any CPU
    cfg = TrainConfig(**dict(TINY, max_steps=8, checkpoint_every=4, eval_every=4, output_dir=str(tmp_path/"run")))
    assert train(cfg, stop_at=5, progress=False) is None
    state = latest_checkpoint(tmp_path/"run")/"state.json"
    meta = json.loads(state.read_text()); del meta["config"]["autocast"]; state.write_text(json.dumps(meta))
    assert train(cfg, resume=True, progress=False).state.step == 8
    with pytest.raises(ValueError, match="different config"):   # the default, not any value: autocast=True is another run
        train(TrainConfig(**dict(asdict(cfg), autocast=True)), resume=True, progress=False)
