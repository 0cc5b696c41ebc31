"""A small reader of the extension's CMakeLists.txt files: what Slicer's build installs, and where.

Used by the packaging tests (what is listed is what is on disk) and to lay out an installed extension
in a folder (``install_layout``), as Slicer's build tree and package do: every module's SCRIPTS and
RESOURCES, the shared BiJROSLib and the engine with its data, all in one ``qt-scripted-modules`` folder.
"""

from __future__ import annotations

import glob
import re
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULES = ("BiJROSRegistration", "FewShotSegment")




def cmake_text(path: Path) -> str:
    """CMake source without comments (a '#' outside quotes starts a comment)."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        out, quoted = [], False
        for char in line:
            if char == '"':
                quoted = not quoted
            if char == "#" and not quoted:
                break
            out.append(char)
        lines.append("".join(out))
    return "\n".join(lines)


def cmake_calls(text: str, command: str) -> list[list[str]]:
    """Arguments of every ``command(...)`` call (quoted strings kept whole, quotes removed)."""
    calls = []
    for match in re.finditer(rf"\b{command}\s*\(", text, flags=re.IGNORECASE):
        depth, i = 1, match.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        body = text[match.end(): i - 1]
        calls.append([a[1:-1] if a.startswith('"') else a for a in re.findall(r'"[^"]*"|[^\s"]+', body)])
    return calls


def cmake_variables(text: str) -> dict[str, list[str]]:
    """``set(NAME values...)`` -> {NAME: values} with ${VAR} references expanded."""
    variables: dict[str, list[str]] = {}
    for args in cmake_calls(text, "set"):
        if not args:
            continue
        values = []
        for value in args[1:]:
            expanded = re.sub(r"\$\{(\w+)\}", lambda m: " ".join(variables.get(m.group(1), [m.group(0)])), value)
            values.extend(expanded.split(";") if ";" in expanded else [expanded])
        variables[args[0]] = values
    return variables


def module_listing(module: str) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """(variables, scripts, resources) listed by a module's CMakeLists.txt."""
    text = cmake_text(REPO / module / "CMakeLists.txt")
    variables = cmake_variables(text)
    calls = cmake_calls(text, "slicerMacroBuildScriptedModule")
    assert len(calls) == 1, f"{module}/CMakeLists.txt must call slicerMacroBuildScriptedModule once"
    args = calls[0]
    keywords = {"NAME", "SCRIPTS", "RESOURCES", "WITH_GENERIC_TESTS", "WITH_SUBDIR", "VERBOSE"}
    sections: dict[str, list[str]] = {}
    current = None
    for arg in args:
        if arg in keywords:
            current = arg
            sections.setdefault(arg, [])
            continue
        for value in re.sub(r"\$\{(\w+)\}", lambda m: ";".join(variables.get(m.group(1), [])), arg).split(";"):
            if value and current:
                sections[current].append(value)
    variables["__call__"] = args
    return variables, sections.get("SCRIPTS", []), sections.get("RESOURCES", [])


def _expand(value: str, variables: dict[str, list[str]]) -> list[str]:
    expanded = re.sub(r"\$\{(\w+)\}", lambda m: ";".join(variables.get(m.group(1), [m.group(0)])), value)
    return [v for v in expanded.split(";") if v]


def installed_files() -> dict[str, Path]:
    """Path inside the installed ``qt-scripted-modules`` folder -> source file, for everything the build installs."""
    files: dict[str, Path] = {}
    for module in MODULES:
        _, scripts, resources = module_listing(module)
        for rel in scripts + resources:
            files[rel] = REPO / module / rel
    text = cmake_text(REPO / "CMakeLists.txt")
    variables = cmake_variables(text)
    for args in cmake_calls(text, "file"):
        if args and args[0] == "GLOB":
            patterns = [a for a in args[2:] if a not in ("RELATIVE", "CONFIGURE_DEPENDS") and not a.startswith("${")]
            variables[args[1]] = sorted({Path(p).relative_to(REPO).as_posix()
                                         for pattern in patterns for p in glob.glob(str(REPO / pattern))})
    for args in cmake_calls(text, "ctkMacroCompilePythonScript"):
        for keyword in ("SCRIPTS", "RESOURCES"):
            if keyword in args:
                for rel in _expand(args[args.index(keyword) + 1], variables):
                    files[rel] = REPO / rel
    return files


def install_layout(destination: Path) -> Path:
    """Copy what the extension installs into ``destination`` (its ``qt-scripted-modules`` folder); returns it."""
    for rel, source in installed_files().items():
        target = destination / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return destination
