"""Crash-safety of a run folder: a crash injected at every file-system step of saving a checkpoint and the final
model leaves the newest complete checkpoint and a loadable model, and resuming ends exactly like an uninterrupted run."""
import hashlib, os, shutil, tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock
import pytest
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
import hybrid_batch.core as core, hybrid_batch.train as tr
from hybrid_batch.train import TrainConfig, train, latest_checkpoint, checkpoint_dirs

TINY = dict(model="tiny", train_data="xquad", langs=["en", "de"], eval_pool=None, batch_size=4, eval_every=4,
            warmup_steps=1, lr=1e-3, valid_batches=2, trim_vocab=False, max_length=32, max_steps=8, checkpoint_every=4)

class Crash(BaseException):
    "What a killed process does at the step it dies on: nothing more (BaseException: no `except Exception` catches it)."

def _fs_calls():
    "Every file-system operation the save paths use, by (owner, attribute)."
    return [(os, "rename"), (os, "replace"), (os, "fsync"), (os, "unlink"), (os, "remove"), (shutil, "rmtree"),
            (tempfile, "mkdtemp"), (tempfile, "mkstemp"), (core, "_exchange"), (core, "fsync_tree"), (tr, "save_file"),
            (Path, "write_text"), (Path, "unlink"), (SentenceTransformer, "save")]

@contextmanager
def crash_at(k:int, armed:list):
    """Count the file-system steps made while `armed[0]` is true; at count `k` the process "dies": a step with an odd
    count dies before it runs, with an even count right after; every later call (cleanup handlers) dies too.
    A step is a call at the top level of the save code: the calls inside `SentenceTransformer.save` or `fsync_tree`
    are part of their step (a crash inside one leaves the same state as one before it: an unfinished hidden folder)."""
    n, dead, depth = [0], [False], [0]
    def wrap(f):
        def g(*a, **kw):
            if dead[0]: raise Crash("dead")
            if not armed[0] or depth[0]: return f(*a, **kw)
            n[0] += 1
            if n[0] == k: dead[0] = True; raise Crash("before")
            depth[0] += 1
            try: out = f(*a, **kw)
            finally: depth[0] -= 1
            n[0] += 1
            if n[0] == k: dead[0] = True; raise Crash("after")
            return out
        return g
    with ExitStack() as st:
        for owner, name in _fs_calls(): st.enter_context(mock.patch.object(owner, name, wrap(getattr(owner, name))))
        yield n

def _armed_during(fn_name, armed, when=lambda *a, **k: True):
    real = getattr(tr, fn_name)
    def g(*a, **kw):
        armed[0] = when(*a, **kw)
        try: return real(*a, **kw)
        finally: armed[0] = False
    return mock.patch.object(tr, fn_name, g)

def _digest(folder):
    return hashlib.sha256((Path(folder)/"model.safetensors").read_bytes()).hexdigest()

def _cfg(out, **kw): return TrainConfig(**{**TINY, "output_dir": str(out), **kw})

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    "An uninterrupted run, and a run folder abandoned after step 6 (checkpoint step-4 in place)."
    base = tmp_path_factory.mktemp("ref")
    full = train(_cfg(base/"full"), progress=False)
    assert train(_cfg(base/"half"), stop_at=6, progress=False) is None
    return base, full

def test_crash_at_every_step_of_a_checkpoint_save(reference, tmp_path):
    base, full = reference
    k = 0
    while True:
        k += 1
        out = tmp_path/f"k{k}"; shutil.copytree(base/"half", out)
        armed = [False]
        with crash_at(k, armed), _armed_during("save_checkpoint", armed, lambda out, m, o, s, state, *a: state.step == 8):
            try: train(_cfg(out), resume=True, progress=False); crashed = False
            except Crash: crashed = True
        steps = [int(p.name[5:]) for p in checkpoint_dirs(out)]
        assert steps in ([4], [8], [8, 4]), (k, steps)       # only complete checkpoints, newest first
        load_file(latest_checkpoint(out)/"state.safetensors")
        resumed = train(_cfg(out), resume=True, progress=False)
        assert resumed.history.loss.dropna().tolist() == full.history.loss.dropna().tolist(), k
        assert _digest(out/"model") == _digest(base/"full"/"model"), k
        if not crashed: break
    assert k > 10, f"only {k - 1} file-system steps were injected"

@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_crash_at_every_step_of_the_final_save_keeps_a_model(reference, tmp_path, exchange):
    "Overwriting a finished run (model A) with run B: at every crash point of B's final save `model/` is A or B, complete."
    base, _ = reference
    if exchange:  # this case must exercise renameat2, not fall back silently to the two-renames case
        (tmp_path/"x").mkdir(); (tmp_path/"y").mkdir()
        if not core._exchange(tmp_path/"x", tmp_path/"y"): pytest.skip("renameat2(RENAME_EXCHANGE) is unavailable here")
    a_digest = _digest(base/"full"/"model")
    b_full = train(_cfg(tmp_path/"b", seed=1), progress=False)
    b_digest = _digest(tmp_path/"b"/"model")
    shutil.copytree(base/"full", tmp_path/"template")         # A's model and records, and B's last checkpoint:
    assert train(_cfg(tmp_path/"template", seed=1), overwrite=True, stop_at=8, progress=False) is None  # B before its save
    k = 0
    while True:
        k += 1
        out = tmp_path/f"k{k}"; shutil.copytree(tmp_path/"template", out)
        armed = [False]
        patches = [crash_at(k, armed), _armed_during("save_outputs", armed)]
        if not exchange: patches.append(mock.patch.object(core, "_exchange", lambda a, b: False))
        with ExitStack() as st:
            for p in patches: st.enter_context(p)
            try: train(_cfg(out, seed=1), resume=True, progress=False); crashed = False
            except Crash: crashed = True
        core.recover_dir(out/"model")
        assert _digest(out/"model") in (a_digest, b_digest), k
        SentenceTransformer(str(out/"model"))
        resumed = train(_cfg(out, seed=1), resume=True, progress=False)
        assert _digest(out/"model") == b_digest, k
        assert resumed.history.loss.dropna().tolist() == b_full.history.loss.dropna().tolist()
        if not crashed: break
    assert k > 6, f"only {k - 1} file-system steps were injected"

def test_a_second_run_into_the_same_folder(reference, tmp_path):
    base, _ = reference
    out = tmp_path/"run"; shutil.copytree(base/"full", out)
    with pytest.raises(ValueError, match="already holds a run; resume it, or pass overwrite"):
        train(_cfg(out, max_steps=2), progress=False)
    assert _digest(out/"model") == _digest(base/"full"/"model")
    r = train(_cfg(out, max_steps=2, checkpoint_every=0), overwrite=True, progress=False)
    assert r.state.step == 2 and checkpoint_dirs(out) == []
    with pytest.raises(ValueError, match="nothing to resume"):
        train(_cfg(out, max_steps=2, checkpoint_every=0), resume=True, progress=False)

def test_bad_output_dir_fails_before_any_work(tmp_path):
    (tmp_path/"file").write_text("")
    with mock.patch.object(tr, "run_data", side_effect=AssertionError("data was loaded")):
        with pytest.raises(ValueError, match="is a file, not a folder"): train(_cfg(tmp_path/"file"), progress=False)
        with pytest.raises(ValueError, match="is not a writable folder"): train(_cfg(tmp_path/"file"/"sub"), progress=False)
        with pytest.raises(ValueError, match="nothing to resume"): train(_cfg(tmp_path/"new"), resume=True, progress=False)
