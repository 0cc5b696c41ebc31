"""Packaging checks for the Slicer extension: what CMake lists is what is on disk.

Slicer packages only the files that a module's CMakeLists.txt lists (SCRIPTS / RESOURCES of
slicerMacroBuildScriptedModule); anything else on disk is silently dropped from the
extension, and a listed file that does not exist breaks the build. These tests catch both,
and check the extension's metadata (top-level CMakeLists.txt, BiJROS.json, icons, licence).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from cmake_listing import cmake_calls, cmake_text, cmake_variables, module_listing

REPO = Path(__file__).resolve().parents[2]
MODULES = ("BiJROSRegistration", "FewShotSegment")
RAW_URL = "https://raw.githubusercontent.com/bijros/SlicerBiJROS/main/"
CATALOG_SCHEMA = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json"
#: properties allowed by the v1.0.1 catalog entry schema ("additionalProperties": false)
CATALOG_PROPERTIES = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                      "build_subdirectory", "enabled", "tier"}
REQUIRED_EXTENSION_VARIABLES = ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS",
                                "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS",
                                "EXTENSION_DEPENDS")


def files_on_disk(module: str) -> tuple[set[str], set[str]]:
    """(.py files, resource files) of a module folder, relative to it (tests and caches excluded)."""
    root = REPO / module
    scripts, resources = set(), set()
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if not path.is_file() or "__pycache__" in rel.parts or rel.parts[0] == "Testing":
            continue
        if path.suffix == ".py":
            scripts.add(rel.as_posix())
        elif rel.parts[0] == "Resources":
            resources.add(rel.as_posix())
    return scripts, resources


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    return struct.unpack(">II", data[16:24])


# ----------------------------------------------------------------------------- module CMakeLists


@pytest.mark.parametrize("module", MODULES)
def test_every_module_file_on_disk_is_listed_in_its_cmakelists(module):
    _, scripts, resources = module_listing(module)
    py_files, resource_files = files_on_disk(module)
    unlisted_py = sorted(py_files - set(scripts))
    unlisted_resources = sorted(resource_files - set(resources))
    assert not unlisted_py, f"{module}/CMakeLists.txt does not list these .py files (Slicer would drop them): {unlisted_py}"
    assert not unlisted_resources, (
        f"{module}/CMakeLists.txt does not list these resources (Slicer would drop them): {unlisted_resources}")


@pytest.mark.parametrize("module", MODULES)
def test_every_listed_file_exists(module):
    _, scripts, resources = module_listing(module)
    missing = [f for f in scripts + resources if not (REPO / module / f).is_file()]
    assert not missing, f"{module}/CMakeLists.txt lists files that do not exist: {missing}"
    assert not [f for f in scripts if not f.endswith(".py")], "SCRIPTS must list .py files"
    assert not [f for f in resources if f.endswith(".py")], ".py files belong in SCRIPTS, not RESOURCES"


@pytest.mark.parametrize("module", MODULES)
def test_module_cmakelists_builds_a_scripted_module_with_its_essentials(module):
    variables, scripts, resources = module_listing(module)
    args = variables["__call__"]
    assert args[args.index("NAME") + 1] in (module, "${MODULE_NAME}") and variables.get("MODULE_NAME") == [module]
    assert "WITH_GENERIC_TESTS" in args
    assert f"{module}.py" in scripts
    assert f"Resources/UI/{module}.ui" in resources
    assert f"Resources/Icons/{module}.png" in resources
    assert len(scripts) == len(set(scripts)) and len(resources) == len(set(resources)), "a file is listed twice"


@pytest.mark.parametrize("module", MODULES)
def test_module_icons_are_128_pixel_pngs(module):
    assert png_size(REPO / module / "Resources" / "Icons" / f"{module}.png") == (128, 128)


# ----------------------------------------------------------------------------- top-level CMakeLists


@pytest.fixture(scope="module")
def top_level() -> tuple[str, dict[str, list[str]]]:
    text = cmake_text(REPO / "CMakeLists.txt")
    return text, cmake_variables(text)


def test_top_level_declares_the_extension(top_level):
    text, variables = top_level
    assert cmake_calls(text, "project")[0][0] == "BiJROS"
    for name in REQUIRED_EXTENSION_VARIABLES:
        assert variables.get(name) and all(v.strip() for v in variables[name]), f"{name} is not set"
    assert variables["EXTENSION_CATEGORY"] == ["Registration"]
    assert "PyTorch" in variables["EXTENSION_DEPENDS"]
    assert variables["EXTENSION_HOMEPAGE"][0].startswith("https://")
    assert ["Slicer", "REQUIRED"] in cmake_calls(text, "find_package")
    includes = [c[0] for c in cmake_calls(text, "include")]
    assert includes[0] == "${Slicer_USE_FILE}"
    assert includes[-2:] == ["${Slicer_EXTENSION_GENERATE_CONFIG}", "${Slicer_EXTENSION_CPACK}"]


def test_top_level_adds_every_module(top_level):
    text, _ = top_level
    subdirectories = [c[0] for c in cmake_calls(text, "add_subdirectory")]
    on_disk = sorted(p.parent.name for p in REPO.glob("*/CMakeLists.txt") if (p.parent / f"{p.parent.name}.py").is_file())
    assert sorted(subdirectories) == sorted(MODULES) == on_disk


def test_extension_icon_and_screenshot_urls_point_at_files_in_the_repository(top_level):
    _, variables = top_level
    icon = variables["EXTENSION_ICONURL"][0]
    assert icon.startswith(RAW_URL)
    assert png_size(REPO / icon[len(RAW_URL):]) == (128, 128)
    screenshots = " ".join(variables["EXTENSION_SCREENSHOTURLS"]).split()
    assert sorted(s[len(RAW_URL):] for s in screenshots) == [
        "Resources/Screenshots/BiJROSRegistration.png", "Resources/Screenshots/FewShotSegment.png"]
    for url in screenshots:
        assert url.startswith(RAW_URL)
        path = REPO / url[len(RAW_URL):]
        assert path.is_file(), f"screenshot {path.relative_to(REPO)} is not in the repository"
        png_size(path)


def test_engine_package_and_data_are_installed_next_to_the_modules(top_level):
    text, variables = top_level
    calls = {c[c.index("TARGET_NAME") + 1]: c for c in cmake_calls(text, "ctkMacroCompilePythonScript")}
    assert sorted(calls) == ["BiJROSEngine", "BiJROSLib"]
    args = calls["BiJROSEngine"]
    assert args[args.index("INSTALL_DIR") + 1] == "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}"
    assert args[args.index("DESTINATION_DIR") + 1] == "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}"
    assert "NO_INSTALL_SUBDIR" in args
    globs = [c for c in cmake_calls(text, "file") if c and c[0] == "GLOB"]
    patterns = {a for c in globs for a in c if "/" in a and "*" in a}
    assert "bijros/*.py" in patterns
    # every engine data file has a pattern that ships it
    for path in (REPO / "bijros" / "data").iterdir():
        if path.is_file():
            assert f"bijros/data/*{path.suffix}" in patterns, f"{path.name} would not be installed with the engine"
    subpackages = [p.name for p in (REPO / "bijros").iterdir() if p.is_dir() and (p / "__init__.py").is_file()]
    missing = [name for name in subpackages if f"bijros/{name}/*.py" not in patterns]
    assert not missing, f"add the engine's subpackages {missing} to the top-level CMakeLists.txt"
    listed = set(variables["BIJROS_EXTENSION_RESOURCES"])
    on_disk = {p.relative_to(REPO).as_posix() for p in (REPO / "Resources" / "Models").glob("*")
               if p.is_file() and p.name != "README.md"}
    assert on_disk <= listed, f"not installed with the extension: {sorted(on_disk - listed)}"
    assert all((REPO / f).is_file() for f in listed)
    # every weight file the model catalog names is installed beside it
    catalog = json.loads((REPO / "Resources" / "Models" / "catalog.json").read_text(encoding="utf-8"))
    assert {f"Resources/Models/{m['file']}" for m in catalog["models"]} <= listed


# ----------------------------------------------------------------------------- catalog entry, licence


def test_extensions_index_catalog_entry():
    entry = json.loads((REPO / "BiJROS.json").read_text(encoding="utf-8"))
    assert entry["$schema"] == CATALOG_SCHEMA
    assert set(entry) <= CATALOG_PROPERTIES, f"not allowed by the schema: {set(entry) - CATALOG_PROPERTIES}"
    assert entry["category"] == "Registration"
    assert entry["build_dependencies"] == ["PyTorch"]
    assert entry["scm_url"] == "https://github.com/bijros/SlicerBiJROS"
    assert entry["scm_revision"] == "main"
    assert entry.get("tier", 5) in (1, 3, 5)
    assert entry.get("build_subdirectory", ".") == "."
    assert isinstance(entry.get("enabled", True), bool)


def test_license_is_apache_2():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def test_shared_lib_is_installed_next_to_the_modules(top_level):
    """BiJROSLib is one top-level package that CMake installs beside the modules (no path set-up in them)."""
    text, _ = top_level
    calls = {c[c.index("TARGET_NAME") + 1]: c for c in cmake_calls(text, "ctkMacroCompilePythonScript")}
    args = calls["BiJROSLib"]
    assert args[args.index("INSTALL_DIR") + 1] == "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}"
    assert "NO_INSTALL_SUBDIR" in args
    globs = [c for c in cmake_calls(text, "file") if c and c[0] == "GLOB" and "BIJROS_LIB_SCRIPTS" in c]
    assert globs and "BiJROSLib/*.py" in globs[0]
    assert not [p for p in (REPO / "BiJROSLib").rglob("*.py") if p.parent != REPO / "BiJROSLib"], "the glob is flat"
    for module in MODULES:
        source = (REPO / module / f"{module}.py").read_text(encoding="utf-8")
        assert "sys.path" not in source, f"{module}.py must not change sys.path"


def test_lib_and_module_files_import_neither_qt_nor_the_engine_at_import_time():
    """The Lib imports in Slicer's console, in tests and in plain Python without Qt; neither it nor the
    panel sections import bijros (or torch) at import time, so a module loads before its packages exist."""
    code = (
        "import sys, importlib; sys.path[:0] = ['BiJROSRegistration', 'FewShotSegment'];"
        "sys.modules['bijros'] = None;"  # any import of the engine now fails
        "import BiJROSLib.logic, BiJROSLib.process, BiJROSLib.dependencies, BiJROSLib.atlases, BiJROSLib.panel;"
        "import BiJROSRegistrationPanel.inputs, BiJROSRegistrationPanel.outputs, BiJROSRegistrationPanel.advanced;"
        "import BiJROSRegistrationPanel.run, FewShotSegmentPanel.target, FewShotSegmentPanel.atlas;"
        "import FewShotSegmentPanel.advanced, FewShotSegmentPanel.run;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('qt', 'PySide6', 'PyQt5', 'ctk', 'torch')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_wheels_carry_the_model_library():
    """A non-editable pip install has no Resources/ folder: pyproject maps Resources/Models into the package."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert config["package-dir"]["bijros.model_library"] == "Resources/Models"
    assert "bijros.model_library" in config["packages"]
    assert {"*.json", "*.safetensors"} <= set(config["package-data"]["bijros.model_library"])
    on_disk = {p.parent.relative_to(REPO).as_posix().replace("/", ".") for p in (REPO / "bijros").rglob("__init__.py")}
    assert on_disk <= set(config["packages"]), f"add {sorted(on_disk - set(config['packages']))} to pyproject packages"
