"""The engine's child process gets only what a real Slicer child would get.

In Slicer the child is ``PythonSlicer -m bijros ...``: Slicer's site-packages (torch & co as pip
installed them) plus the PYTHONPATH it is given, the folder the extension is installed in. The
stand-in's PythonSlicer (slicer_shell.writePythonSlicer) hides the test venv's editable install of
``bijros``; these tests show that it does, and run the modules from a folder laid out exactly as
the extension's CMake installs them (so a file missing from a CMakeLists.txt fails here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cmake_listing import install_layout

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

pytest.importorskip("PySide6.QtUiTools", reason="needs PySide6 (pip install PySide6-Essentials)")
pytest.importorskip("slicer", reason="needs the slicer-core wheel")
if os.name == "nt":  # pragma: no cover
    pytest.skip("the PythonSlicer stand-in is a POSIX shell script", allow_module_level=True)


@pytest.fixture(scope="module")
def python_slicer(tmp_path_factory):
    sys.path.insert(0, str(HERE))
    from slicer_shell import writePythonSlicer

    return writePythonSlicer(str(tmp_path_factory.mktemp("bin") / "PythonSlicer"))


def run_child(python_slicer, code, pythonpath="", cwd=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env["QT_QPA_PLATFORM"] = "offscreen"
    return subprocess.run([python_slicer, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=cwd or "/")


def test_child_python_does_not_see_the_editable_install(python_slicer):
    proc = run_child(python_slicer, "import torch, numpy, SimpleITK; import bijros")
    assert proc.returncode != 0 and "No module named 'bijros'" in proc.stderr, proc.stderr[-2000:]
    proc = run_child(python_slicer, "import bijros; print(bijros.__file__)", pythonpath=str(REPO))
    assert proc.returncode == 0 and proc.stdout.strip() == str(REPO / "bijros" / "__init__.py")


def test_installed_extension_runs_from_its_own_folder(python_slicer, tmp_path):
    """Both modules load from the installed layout, run their in-Slicer self-tests there, and a
    registration's engine child imports bijros from that folder (the child's PYTHONPATH), not the repo."""
    layout = install_layout(tmp_path / "qt-scripted-modules")
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(HERE)!r})        # the stand-in itself (tests only)
        import slicer_shell
        slicer_shell.install()
        import slicer
        for name in ("BiJROSRegistration", "FewShotSegment"):
            module, widget = slicer_shell.loadScriptedModule({str(layout)!r} + "/" + name + ".py")
            module.runTest(msec=0)
        import BiJROSLib, BiJROSRegistration
        from BiJROSLib.selftest import makePhantomPair
        fixed, moving, _ = makePhantomPair((2, 0, 0))
        nodes = BiJROSRegistration.BiJROSRegistrationLogic().register(fixed, moving, method="affine",
                                                                      preset="fast", device="cpu")
        print(json.dumps({{"lib": BiJROSLib.__file__, "engine": nodes["report"]["bijros_path"],
                          "parent_engine_loaded": "bijros" in sys.modules and sys.modules["bijros"].__file__}}))
        sys.stdout.flush()
        import os
        os._exit(0)  # no interpreter teardown: its garbage collection can abort in PySide6/VTK (see conftest.py)
    """)
    proc = run_child(python_slicer, code, pythonpath=str(layout), cwd=str(tmp_path))
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["lib"].startswith(str(layout))
    assert found["engine"] == str(layout / "bijros")


def test_module_files_load_without_the_engine(python_slicer, tmp_path):
    """Slicer instantiates every module at start-up: both module files load and their Module classes
    build (title, help) while `bijros` cannot be imported at all (e.g. before its packages are installed)."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        sys.modules["bijros"] = None  # any import of the engine fails
        import slicer_shell
        slicer_shell.install()
        import importlib.util, types
        for name in ("BiJROSRegistration", "FewShotSegment"):
            folder = {str(REPO)!r} + "/" + name
            sys.path.insert(0, folder)
            spec = importlib.util.spec_from_file_location(name, folder + "/" + name + ".py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            parent = types.SimpleNamespace(path=folder + "/" + name + ".py")
            getattr(module, name)(parent)
            assert parent.title and "BiJROS" in parent.acknowledgementText, name
        assert "torch" not in sys.modules
        print("loaded")
    """)
    proc = run_child(python_slicer, code, pythonpath=str(REPO), cwd=str(tmp_path))
    assert proc.returncode == 0 and "loaded" in proc.stdout, proc.stderr[-4000:]
