"Every notebook in nbs/ runs top to bottom (cells flagged slow/gpu/online skipped, as nbdev_test does)."
import os
from configparser import ConfigParser
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(p for p in (ROOT/"nbs").glob("*.ipynb") if not p.name.startswith("_"))

def _flags():
    cfg = ConfigParser(); cfg.read(ROOT/"settings.ini")
    return cfg["DEFAULT"]["tst_flags"].split()

@pytest.mark.parametrize("nb", NBS, ids=[p.stem for p in NBS])
def test_notebook_runs(nb):
    from nbdev.test import test_nb
    cwd = os.getcwd()
    try: ok, secs = test_nb(nb, skip_flags=_flags(), showerr=True)
    finally: os.chdir(cwd)
    assert ok, f"{nb.name} failed (traceback above)"
