"""The engine and the Slicer-side code run on the Python of every Slicer we support.

Supported: Slicer 5.8 (Python 3.9.10), 5.10 and 5.12 (Python 3.12.10); see README "Slicer versions".

* ``vermin`` (a static checker of the minimum Python version each construct and stdlib call needs)
  over bijros/, BiJROSLib/ and both modules: nothing may need more than Python 3.9.
* Where a Python 3.9 or 3.12 interpreter is installed here (pyenv, or python3.X on PATH), the engine's
  torch-free command-line paths run under it end to end in a fresh venv (numpy, nibabel, SimpleITK,
  scipy, tqdm, safetensors from PyPI; a CPU torch for those Pythons is not on PyPI, so the
  registration itself runs in the other tests), and every Slicer-side file is byte-compiled by it.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
OLDEST = "3.9"
SLICER_PYTHONS = ("3.9", "3.12")  # Slicer 5.8; Slicer 5.10 and 5.12
CHECKED = ["bijros", "BiJROSLib", "BiJROSRegistration", "FewShotSegment"]
ENGINE_PACKAGES = ["numpy", "nibabel", "SimpleITK", "scipy", "tqdm", "safetensors"]


def test_nothing_needs_a_newer_python_than_the_oldest_slicer():
    vermin = shutil.which("vermin") or str(Path(sys.executable).parent / "vermin")
    if not Path(vermin).exists():
        pytest.skip("vermin is not installed (pip install -e '.[test]')")
    proc = subprocess.run([vermin, f"-t={OLDEST}-", "--eval-annotations", "--no-tips", "--violations",
                           "--no-parse-comments", *CHECKED], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"code that Python {OLDEST} (Slicer 5.8) cannot run:\n{proc.stdout}{proc.stderr}"


def find_python(version: str) -> str | None:
    override = os.environ.get(f"BIJROS_PYTHON_{version.replace('.', '_')}")
    candidates = [override] if override else []
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}")),
                         reverse=True)
    candidates.append(shutil.which(f"python{version}"))
    for candidate in candidates:
        if not candidate or not Path(candidate).exists():
            continue
        probe = subprocess.run([candidate, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=60)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


@pytest.fixture(scope="module", params=SLICER_PYTHONS)
def slicer_python(request, tmp_path_factory):
    version = request.param
    interpreter = find_python(version)
    if interpreter is None:
        pytest.skip(f"no Python {version} interpreter here (pyenv or python{version} on PATH)")
    venv = tmp_path_factory.mktemp(f"py{version}") / "venv"
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *ENGINE_PACKAGES],
                             capture_output=True, text=True, timeout=900)
    if install.returncode != 0:
        pytest.skip(f"could not install the engine's packages for Python {version}: {install.stderr[-500:]}")
    return version, python


def run(python, *args, cwd=None, extra_env=None):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra_env or {})
    return subprocess.run([python, *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def test_slicer_side_files_compile_under_each_slicer_python(slicer_python, tmp_path):
    version, python = slicer_python
    files = [str(p) for folder in CHECKED for p in sorted((REPO / folder).rglob("*.py"))]
    code = ("import sys\n"
            "for f in sys.argv[1:]:\n"
            "    compile(open(f, encoding='utf-8').read(), f, 'exec')\n")
    proc = run(python, "-c", code, *files)
    assert proc.returncode == 0, f"Python {version}: {proc.stderr[-3000:]}"


def test_engine_cli_runs_under_each_slicer_python(slicer_python, tmp_path):
    """Under the Slicer Pythons: the torch-free modules import, --help of every subcommand, `atlases`
    resolves catalog entries, `models` reads the model catalog, `evaluate` scores two label maps."""
    version, python = slicer_python
    imports = ("import sys, bijros, bijros.cli, bijros.io, bijros.io.outputs, bijros.metrics, bijros.progress,"
               " bijros.atlas.library, bijros.atlas.folders, bijros.atlas.fusion, bijros.models.library,"
               " bijros.registration.methods;"
               "assert 'torch' not in sys.modules; print(sys.version_info[:2])")
    proc = run(python, "-c", imports)
    assert proc.returncode == 0, f"Python {version}: {proc.stderr[-3000:]}"
    for sub in ("register", "propagate", "evaluate", "demo", "atlases", "atlas", "models", "train-registration",
                "publish-model"):
        proc = run(python, "-m", "bijros", sub, "--help")
        assert proc.returncode == 0 and "usage: bijros" in proc.stdout, (sub, proc.stderr[-2000:])
    proc = run(python, "-m", "bijros", "models")
    assert proc.returncode == 0 and "eoir" in proc.stdout, proc.stderr[-2000:]

    sys.path.insert(0, str(REPO))
    from bijros.io import save_image
    from bijros.io.image import Image

    truth = np.zeros((12, 12, 12), np.int16)
    truth[2:8, 2:8, 2:8] = 1
    truth[8:11, 3:9, 3:9] = 2
    pred = np.roll(truth, 1, axis=0)
    save_image(Image(truth, np.eye(4)), tmp_path / "truth.nii.gz")
    save_image(Image(pred, np.eye(4)), tmp_path / "pred.nii.gz")
    proc = run(python, "-m", "bijros", "evaluate", "--pred", str(tmp_path / "pred.nii.gz"),
               "--truth", str(tmp_path / "truth.nii.gz"))
    assert proc.returncode == 0, f"Python {version}: {proc.stderr[-3000:]}"
    scores = json.loads(proc.stdout)
    assert 0.5 < scores["mean_dice"] < 0.95, scores
    library = tmp_path / "library"
    (library / "images").mkdir(parents=True)
    (library / "labels").mkdir()
    save_image(Image(truth.astype(np.float32), np.eye(4)), library / "images" / "a.nii.gz")
    save_image(Image(truth, np.eye(4)), library / "labels" / "a.nii.gz")
    config = {"BIJROS_CONFIG_DIR": str(tmp_path / "config")}
    proc = run(python, "-m", "bijros", "atlas", "add", str(library), "--name", "lib", extra_env=config)
    assert proc.returncode == 0 and "1 atlases" in proc.stdout, proc.stderr[-2000:]
    proc = run(python, "-m", "bijros", "atlas", "list", extra_env=config)
    assert proc.returncode == 0 and "lib (library)" in proc.stdout, proc.stderr[-2000:]
    proc = run(python, "-m", "bijros", "evaluate", "--pred", str(tmp_path / "missing.nii.gz"),
               "--truth", str(tmp_path / "truth.nii.gz"))
    assert proc.returncode == 2 and "missing.nii.gz" in proc.stderr and "Traceback" not in proc.stderr
