"""A batch manifest: one job per row, in CSV (with a header) or JSON lines.

Columns: ``kind`` (register, propagate, segment, fewshot), then one column per long option of that
subcommand, named without the dashes and with ``_`` for ``-`` (``atlas_labels`` for ``--atlas-labels``).
An empty cell means the option's default; a flag (``--diffeomorphic``) takes true/false, yes/no or 1/0.
Two columns belong to the batch itself: ``job`` (a name for the row, unique; default: the main input's
file name) and ``reference`` (a label map on the target's grid: the summary gets the mean Dice against it).
``out`` defaults to ``BATCH_OUT/<job>``. Relative paths are read from the manifest's folder.

Rows are checked before anything runs: a row with an unknown kind, an option its kind does not have, a
missing file or arguments its command refuses fails with its line number and the others run; an output
folder given to two rows, a column no kind knows, or two rows with one job name stop the whole batch.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
from pathlib import Path

from bijros.errors import InputError

KINDS = ("register", "propagate", "segment", "fewshot")
BATCH_COLUMNS = ("kind", "job", "reference")
# options naming files or folders that must exist before the job runs
PATH_OPTIONS = {"fixed", "moving", "moving_labels", "atlas", "atlas_labels", "target", "image", "support_image",
                "support_labels", "query", "fixed_mask", "labels_table", "prompts"}
# options that are a file/folder when they look like a path, else a name (a catalog model, an added library)
NAME_OR_PATH = {"model", "atlas_library"}
# the job's main input: its file name is the default job name, its size balances the shards
MAIN_INPUT = {"register": "fixed", "propagate": "target", "segment": "image", "fewshot": "query"}
TRUE, FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off", ""}


@dataclasses.dataclass
class Job:
    line: int
    kind: str
    name: str
    argv: list = dataclasses.field(default_factory=list)  # the subcommand and its options, --out included
    out: str = ""
    reference: str | None = None
    named: bool = False  # the row gave its name in a 'job' column
    main_input: str | None = None
    error: str | None = None  # why the row cannot run (it is reported as failed, the others run)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Option:
    flag: str
    is_switch: bool


def _kind_options(parser: argparse.ArgumentParser) -> dict[str, dict[str, _Option]]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    kinds = {}
    for kind in KINDS:
        options = {}
        for action in sub.choices[kind]._actions:
            longs = [s for s in action.option_strings if s.startswith("--")]
            if not longs or action.dest in ("help", "progress"):
                continue
            options[longs[0][2:].replace("-", "_")] = _Option(longs[0], action.nargs == 0)
        kinds[kind] = options
    return kinds


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, {column: text}) for each row of a CSV (header first) or JSON-lines manifest."""
    if not path.is_file():
        raise InputError(f"--manifest {path}: file not found.")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        rows = []
        for number, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path.name} line {number}: not valid JSON ({exc.msg}).") from exc
            if not isinstance(data, dict):
                raise InputError(f"{path.name} line {number}: each line must be one JSON object {{\"kind\": ...}}.")
            rows.append((number, {str(k): _cell(v) for k, v in data.items()}))
        return rows
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "kind" not in [f.strip() for f in reader.fieldnames]:
        raise InputError(f"{path.name}: the first line must be a header naming the columns, with a 'kind' column "
                         "(e.g. kind,atlas,atlas_labels,target,out).")
    rows = []
    for row in reader:
        if None in row:
            raise InputError(f"{path.name} line {reader.line_num}: more cells than the header has columns.")
        if any((v or "").strip() for v in row.values()):
            rows.append((reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items()}))
    return rows


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _resolve(base: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.endswith(".json")


def load_manifest(path, out_dir) -> list[Job]:
    """The manifest's jobs, each checked; raises :class:`InputError` for a problem that stops the whole batch."""
    path = Path(path)
    base = path.resolve().parent
    rows = read_rows(path)
    if not rows:
        raise InputError(f"{path.name} lists no jobs.")
    from bijros.cli import build_parser

    parser = build_parser()  # once: every row is checked against it
    kinds = _kind_options(parser)
    known = set(BATCH_COLUMNS).union(*kinds.values())
    unknown = sorted({c for _, row in rows for c in row if c not in known})
    if unknown:
        raise InputError(f"{path.name}: unknown column(s) {', '.join(unknown)}; columns are 'kind', 'job', "
                         "'reference' and the long options of the job's subcommand without the dashes, with _ for -.")
    jobs = [_job(number, row, kinds, base, Path(out_dir), parser) for number, row in rows]
    _check_unique(jobs, path.name, Path(out_dir))
    return jobs


def _job(number: int, row: dict, kinds: dict, base: Path, out_dir: Path, parser: argparse.ArgumentParser) -> Job:
    kind = row.get("kind", "")
    job = Job(number, kind, row.get("job") or "", named=bool(row.get("job")))
    if job.named and (job.name in (".", "..") or any(c in job.name for c in '/\\:')):
        job.error = f"line {number}: job name '{job.name}' must not hold / \\ : (it names a folder)."
        job.name = f"line{number}"
        return job
    if kind not in kinds:
        job.error = f"line {number}: unknown job kind '{kind}'; use one of {', '.join(KINDS)}."
        job.name = job.name or f"line{number}"
        return job
    options = kinds[kind]
    main = row.get(MAIN_INPUT[kind], "")
    job.name = job.name or (_stem(main) if main else f"line{number}")
    argv = [kind]
    for column, value in row.items():
        if column in BATCH_COLUMNS or column == "out" or value == "":
            continue
        if column not in options:
            job.error = f"line {number}: '{column}' is not an option of `bijros {kind}`."
            return job
        option = options[column]
        if option.is_switch:
            if value.lower() not in TRUE | FALSE:
                job.error = f"line {number}: {column} is a switch; write true or false, not '{value}'."
                return job
            if value.lower() in TRUE:
                argv.append(option.flag)
            continue
        if column in PATH_OPTIONS or (column in NAME_OR_PATH and (_looks_like_path(value) or kind == "segment")):
            value = _resolve(base, value)
            if not (Path(value).exists() or "::" in value):
                job.error = f"line {number}: {column} {value} not found."
                return job
        argv += [option.flag, value]
    job.out = _resolve(base, row["out"]) if row.get("out") else str(out_dir / job.name)
    job.argv = [*argv, "--out", job.out]
    job.main_input = _resolve(base, main) if main else None
    if row.get("reference"):
        job.reference = _resolve(base, row["reference"])
        if not Path(job.reference).is_file():
            job.error = f"line {number}: reference {job.reference} not found."
            return job
    job.error = _parse_error(job, parser)
    return job


def _parse_error(job: Job, parser: argparse.ArgumentParser) -> str | None:
    """What argparse says of the job's arguments (a missing required option), as one line, or None."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(job.argv)
    except SystemExit:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        reason = lines[-1].split("error:", 1)[-1].strip() if lines else "its options are not accepted"
        return f"line {job.line}: {reason}"
    return None


def _stem(value: str) -> str:
    from bijros.io.images import file_stem

    return file_stem(Path(value.split("::")[0])) or "job"


def _check_unique(jobs: list[Job], manifest: str, out_dir: Path) -> None:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.name] = counts.get(job.name, 0) + 1
    for job in jobs:  # default names that clash (two targets called t1.nii.gz) get their line number
        if counts[job.name] > 1 and not job.named:
            default_out = str(out_dir / job.name)
            job.name = f"{job.name}-line{job.line}"
            if job.argv and job.out == default_out:
                job.out = str(out_dir / job.name)
                job.argv[-1] = job.out
    lines_of: dict[str, list[int]] = {}
    for job in jobs:
        lines_of.setdefault(job.name, []).append(job.line)
    for name, lines in lines_of.items():
        if len(lines) > 1:
            raise InputError(f"{manifest}: lines {', '.join(map(str, lines))} share the job name '{name}'; give each "
                             "row its own 'job'.")
    outs: dict[str, list[int]] = {}
    batch_dir = out_dir.resolve()
    for job in jobs:
        if not job.out:
            continue
        resolved = Path(job.out).resolve()
        if resolved == batch_dir or batch_dir.is_relative_to(resolved):
            raise InputError(f"{manifest} line {job.line}: out {job.out} holds the batch's own --out folder "
                             "(summary.csv goes there); give the job a folder of its own.")
        outs.setdefault(str(resolved), []).append(job.line)
    for folder, lines in outs.items():
        if len(lines) > 1:
            raise InputError(f"{manifest}: lines {', '.join(map(str, lines))} write to the same output folder "
                             f"{folder}; nothing was run. Give each row its own 'out'.")
