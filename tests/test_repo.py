"The repository's own consistency: library exported from the notebooks, clean notebooks, README from index."
import os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.py"))}

def test_library_in_sync_with_notebooks(tmp_path):
    "nbdev_export on a copy of the notebooks reproduces hybrid_batch/ byte for byte."
    for name in ("settings.ini", "setup.py"): shutil.copy(ROOT/name, tmp_path/name)
    shutil.copytree(ROOT/"nbs", tmp_path/"nbs", ignore=shutil.ignore_patterns(".ipynb_checkpoints", "_*"))
    shutil.copytree(ROOT/"hybrid_batch", tmp_path/"hybrid_batch", ignore=shutil.ignore_patterns("__pycache__"))
    for p in (tmp_path/"hybrid_batch").glob("*.py"):
        if p.name != "__init__.py": p.unlink()
    exe = Path(sys.executable).parent/"nbdev_export"
    env = {k: v for k, v in os.environ.items() if k != "IN_TEST"}  # set by nbdev's notebook runner
    subprocess.run([str(exe)], cwd=tmp_path, check=True, capture_output=True, env=env)
    ours, fresh = _tree(ROOT/"hybrid_batch"), _tree(tmp_path/"hybrid_batch")
    stale = sorted(k for k in ours.keys() | fresh.keys() if ours.get(k) != fresh.get(k))
    assert not stale, f"hybrid_batch/ differs from nbdev_export of nbs/ in {stale}: edit the notebooks and run nbdev_export"

@pytest.mark.parametrize("nb", sorted((ROOT/"nbs").glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebook_is_clean(nb, monkeypatch):
    "Each notebook equals what nbdev_clean would write."
    from execnb.nbio import read_nb, nb2str
    from nbdev.clean import _nbdev_clean
    monkeypatch.chdir(ROOT)
    text = nb.read_text(encoding="utf-8")
    cleaned = read_nb(nb)
    _nbdev_clean(cleaned, path=None)
    assert nb2str(cleaned) == text, f"{nb.name} is not clean: run nbdev_clean"

def test_readme_matches_index():
    "README.md is the executed nbs/index.ipynb rendered by hybrid_batch.docs."
    from hybrid_batch.docs import readme_markdown
    assert (ROOT/"README.md").read_text(encoding="utf-8") == readme_markdown(ROOT/"nbs"/"index.ipynb"), \
        "README.md is out of date: run `hybrid-batch docs --readme`"

def test_ci_runs_the_readme_commands():
    "The commands .ci/run executes are the ones the README tells users to run."
    readme, ci = (ROOT/"README.md").read_text(), (ROOT/".ci"/"run").read_text()
    for cmd in ('python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" -c constraints.txt && .venv/bin/hybrid-batch reproduce --config quick --out runs/quick',
                ".venv/bin/python -m pytest"):
        assert cmd in readme and cmd in ci, cmd
