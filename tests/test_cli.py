"The command line speaks in one line: every user error is one stderr line naming the field, file or value, no traceback."
import os, subprocess, sys
from pathlib import Path
import pytest
import hybrid_batch.cli as cli
import hybrid_batch.models
from hybrid_batch.cli import main
from hybrid_batch.models import char_encoder

def _never(what):
    def f(*a, **kw): raise AssertionError(f"{what} must not run before the arguments are checked")
    return f

@pytest.fixture(autouse=True)
def nothing_loads(monkeypatch):
    "Training, studies, encoders and data stay untouched: every case here must fail first."
    monkeypatch.delenv("HYBRID_BATCH_DEBUG", raising=False)
    for name in ("train", "run_study", "run_multimodal", "load_xquad", "squad_pairs"): monkeypatch.setattr(cli, name, _never(name))
    monkeypatch.setattr(hybrid_batch.models, "load_encoder", _never("load_encoder"))

def fails(argv, capsys)->tuple:
    "(exit status, the one stderr line) of `main(argv)`, which must fail with exactly one line."
    with pytest.raises(SystemExit) as e: main(argv)
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return e.value.code, err.strip()

@pytest.fixture
def files(tmp_path):
    "Config files a user may get wrong: empty, a JSON list, an unknown field."
    for name, text in (("empty.json", ""), ("list.json", "[1, 2]"), ("unknown.json", '{"bogus": 1}')):
        (tmp_path/name).write_text(text)
    return tmp_path

TRAIN = [  # the messages of config_from/check_config (05_train), turned into one line
    (["--set", "batch_size=abc"], "batch_size must be int, got 'abc'"),
    (["--set", "batch_size=2.5"], "batch_size must be int, got 2.5"),
    (["--set", "batch_size"], "--set expects KEY=VALUE, got 'batch_size'"),
    (["--set", "alpha=2"], "alpha must be in [0, 1], got 2"),
    (["--set", "nosuchfield=1"], "unknown TrainConfig field(s) ['nosuchfield']"),
    (["--config", "{d}/missing.json"], "config file {d}/missing.json does not exist"),
    (["--config", "{d}/empty.json"], "config file {d}/empty.json is not valid JSON"),
    (["--config", "{d}/list.json"], "config file {d}/list.json must hold a JSON object of fields, got a JSON list"),
    (["--config", "{d}/unknown.json"], "unknown TrainConfig field(s) ['bogus'] in {d}/unknown.json"),
]

@pytest.mark.parametrize("args, msg", TRAIN, ids=[" ".join(a) for a, _ in TRAIN])
def test_train_config_errors(args, msg, files, capsys):
    code, err = fails(["train", *(a.format(d=files) for a in args)], capsys)
    assert code == 1 and err.startswith("hybrid-batch train: error: ") and msg.format(d=files) in err, err

PRESET = [
    ("reproduce", "quik", "--config 'quik' is neither a preset (quick, full, paper, budget) nor a file"),
    ("reproduce", "{d}/empty.json", "config file {d}/empty.json is not valid JSON"),
    ("reproduce", "{d}/unknown.json", "config file {d}/unknown.json does not hold the expected fields"),
    ("reproduce", "{d}/list.json", "config file {d}/list.json does not hold the expected fields"),
    ("multimodal", "ful", "--config 'ful' is neither a preset (quick, full) nor a file"),
]

@pytest.mark.parametrize("cmd, config, msg", PRESET)
def test_unknown_preset_or_bad_file(cmd, config, msg, files, capsys):
    code, err = fails([cmd, "--config", config.format(d=files)], capsys)
    assert code == 1 and err.startswith(f"hybrid-batch {cmd}: error: {msg.format(d=files)}"), err

EVALUATE = [
    (["--langs"], 1, "langs is empty; choose from ar de en es hi vi zh"),
    (["--langs", "de", "hi", "de"], 1, "langs repeats ['de']"),
    (["--langs", "xx"], 1, "unknown language code(s) ['xx'] for mlqa-r; valid: ar de en es hi vi zh"),
    (["--pool", "xquad-r", "--langs", "ro"], 1, "unknown language code(s) ['ro'] for xquad-r"),
    (["--batch-size", "0"], 2, "argument --batch-size: must be >= 1, got 0"),
]

@pytest.mark.parametrize("args, status, msg", EVALUATE, ids=[" ".join(a) for a, *_ in EVALUATE])
def test_evaluate_languages_checked_before_the_model_loads(args, status, msg, tmp_path, capsys):
    code, err = fails(["evaluate", "--out", str(tmp_path), *args], capsys)
    assert code == status and err.startswith("hybrid-batch evaluate: error: ") and msg in err, err
    assert list(tmp_path.iterdir()) == []

PARSER = [
    (["sweep", "--seeds", "0"], "argument --seeds: must be >= 1, got 0"),
    (["sweep", "--seeds", "two"], "argument --seeds: expected an integer >= 1, got 'two'"),
    (["sweep", "--alphas", "0,0.5,abc"], "argument --alphas: alpha 'abc' is not a number"),
    (["sweep", "--alphas", "0,1.5"], "argument --alphas: alpha must be in [0, 1], got 1.5"),
    (["sweep", "--alphas=-0.1,0.5"], "argument --alphas: alpha must be in [0, 1], got -0.1"),
    (["sweep", "--alphas", "0,,1"], "argument --alphas: alpha '' is not a number"),
    (["sweep", "--direction", "xquad"], "argument --direction: expected TRAIN:POOL"),
    (["multimodal", "--alphas", "2"], "argument --alphas: alpha must be in [0, 1], got 2"),
    (["multimodal", "--seeds", "0"], "argument --seeds: must be >= 1, got 0"),
    (["translate", "--limit", "0"], "argument --limit: must be >= 1, got 0"),
    (["translate", "--limit", "-1"], "argument --limit: must be >= 1, got -1"),
]

@pytest.mark.parametrize("argv, msg", PARSER, ids=[" ".join(a) for a, _ in PARSER])
def test_parser_checks_counts_and_alphas(argv, msg, capsys):
    code, err = fails(argv, capsys)
    assert code == 2 and err.startswith(f"hybrid-batch {argv[0]}: error: {msg}"), err
    assert err.endswith(f"(see hybrid-batch {argv[0]} --help)")

def test_translate_pair_checked_before_data(tmp_path, capsys):
    code, err = fails(["translate", "--targets", "es", "--out", str(tmp_path/"x.jsonl")], capsys)
    assert code == 1 and "cannot translate en→es; it can: en→pt, pt→en" in err

def test_missing_input_file_named(tmp_path, monkeypatch, capsys):
    from hybrid_batch.translate import squad_pairs
    monkeypatch.setattr(cli, "squad_pairs", squad_pairs)
    code, err = fails(["translate", "--input", str(tmp_path/"own.json")], capsys)
    assert (code, err) == (1, f"hybrid-batch translate: error: {tmp_path/'own.json'}: No such file or directory")

def test_data_folder_named(tmp_path, capsys):
    code, err = fails(["data", "--summary", "--root", str(tmp_path)], capsys)
    assert (code, err) == (1, f"hybrid-batch data: error: lareqa/xquad-r/ar.json not found in the data folder {tmp_path}")

def test_debug_shows_the_traceback(monkeypatch):
    with pytest.raises(ValueError, match="batch_size must be int"): main(["--debug", "train", "--set", "batch_size=abc"])
    monkeypatch.setenv("HYBRID_BATCH_DEBUG", "1")
    with pytest.raises(ValueError, match="--set expects KEY=VALUE"): main(["train", "--set", "batch_size"])

@pytest.mark.parametrize("model", ["..", ".", "/abs/path", "a/../../b"])
def test_evaluate_outputs_stay_under_out(model, tmp_path, monkeypatch, capsys):
    "Whatever the model name, the files go to one folder directly under --out."
    monkeypatch.setattr(hybrid_batch.models, "load_encoder", lambda *a, **kw: char_encoder())
    out = tmp_path/"a"/"out"
    main(["evaluate", "--model", model, "--langs", "de", "--batch-size", "512", "--out", str(out)])
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == 5 and {p.parent.parent for p in written} == {out}, written

def _console(*args, env=None):
    exe = Path(sys.executable).parent/"hybrid-batch"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from hybrid_batch.cli import main; main()"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)

def test_console_script_one_line_then_traceback_with_debug():
    "The installed script: exit status 1 and one stderr line; HYBRID_BATCH_DEBUG=1 gives the traceback."
    r = _console("train", "--set", "batch_size=abc", env={"HYBRID_BATCH_DEBUG": ""})
    assert (r.returncode, r.stderr) == (1, "hybrid-batch train: error: batch_size must be int, got 'abc'\n")
    r = _console("train", "--set", "batch_size=abc", env={"HYBRID_BATCH_DEBUG": "1"})
    assert r.returncode == 1 and "Traceback" in r.stderr and r.stderr.rstrip().endswith("ValueError: batch_size must be int, got 'abc'")

def test_run_folder_mistakes_are_one_line(tmp_path, monkeypatch, capsys):
    "A second run into a finished run's folder, and --resume without a checkpoint: refused in one line before any work."
    import hybrid_batch.train as tr
    monkeypatch.setattr(cli, "train", tr.train)            # the real train: it must stop in prepare_output
    monkeypatch.setattr(tr, "run_data", _never("run_data"))
    (tmp_path/"run"/"model").mkdir(parents=True)
    code, err = fails(["train", "--set", f"output_dir=\"{tmp_path/'run'}\""], capsys)
    assert code == 1 and "already holds a run; resume it, or pass overwrite" in err
    code, err = fails(["train", "--set", f"output_dir=\"{tmp_path/'new'}\"", "--resume"], capsys)
    assert code == 1 and "nothing to resume: no checkpoint in" in err
    code, err = fails(["train", "--set", "strategy=x_y", "--set", "alpha=0.3"], capsys)
    assert "strategy 'x_y' always uses alpha=0, got alpha=0.3" in err

@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
def test_missing_cuda_is_one_line(tmp_path, capsys):
    code, err = fails(["evaluate", "--out", str(tmp_path), "--device", "cuda"], capsys)
    assert code == 1 and "device 'cuda' requested, but torch sees no CUDA GPU" in err, err

def test_sweep_budget_and_adopt_mistakes(tmp_path, capsys):
    code, err = fails(["sweep", "--budget", "300", "--out", str(tmp_path/"s")], capsys)
    assert code == 1 and "budget 300 is not one of the base's budgets None" in err, err
    code, err = fails(["sweep", "--base", "budget", "--budget", "300", "--adopt", str(tmp_path/"nowhere"), "--out", str(tmp_path/"s")], capsys)
    assert code == 1 and str(tmp_path/"nowhere"/"results.json") in err, err
