"""Text prompts from Slicer: which segments a prompt names (live, as the user types) and the words per segment
that steer the text-filter methods (``--method text`` / ``text+io``).

Matching runs the engine's ``bijros prompt-match`` in a child process like every engine call (the text model
loads there, never in Slicer's own process); :class:`PromptMatcher` keeps at most one running and drops a
result that a newer prompt has overtaken, so a panel can start one on every pause in typing.

Console example::

    matcher = PromptMatcher()
    matcher.start("hippocampus and amygdala", segmentationNode)
    while not matcher.poll(): time.sleep(0.1)
    print(matcher.matched)          # [{"value": 3, "name": "Left Hippocampus", "score": 0.93}, ...]
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

from .process import DONE, FAILED, ProcessRunner


def segmentNames(segmentationNode) -> list[str]:
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def writeSegmentTable(segmentationNode, path: Path) -> None:
    """The segment names as a label table for matching (value = position + 1: only the names are matched)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["value", "name"])
        for value, name in enumerate(segmentNames(segmentationNode), start=1):
            writer.writerow([value, name])


def writeSegmentPrompts(labelTable, segmentPrompts: dict, path: Path) -> int:
    """A prompts file (``value,prompt``) for ``--prompts`` from {segment name: words}, through the label table the
    segmentation was exported with; empty words are left out. Returns how many were written; ``ValueError`` for a
    segment the table does not hold."""
    byName = {entry.name: entry.value for entry in labelTable}
    rows = []
    for name, words in segmentPrompts.items():
        words = str(words or "").strip()
        if not words:
            continue
        if name not in byName:
            raise ValueError(f"The prompt table names the segment '{name}', which the moving segmentation does not "
                             "have; refresh the table.")
        rows.append((byName[name], words))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("value", "prompt"), *rows])
    return len(rows)


class PromptMatcher:
    """One prompt match at a time in a child process (``bijros prompt-match``). ``start`` replaces a running
    one; ``poll`` returns True once the latest has ended, with ``matched`` (a list of label dicts) or ``error``."""

    def __init__(self):
        self._runner: ProcessRunner | None = None
        self._workdir: Path | None = None
        self.prompt = ""
        self.matched: list[dict] = []
        self.phrases: list[dict] = []
        self.error = ""

    def start(self, prompt: str, segmentationNode) -> None:
        self.stop()
        self.prompt, self.matched, self.phrases, self.error = prompt, [], [], ""
        self._workdir = Path(tempfile.mkdtemp(prefix="bijros-prompt-"))
        writeSegmentTable(segmentationNode, self._workdir / "segments.csv")
        self._runner = ProcessRunner()
        self._runner.start(["prompt-match", "--labels-table", "segments.csv", "--prompt", prompt], self._workdir)

    @property
    def running(self) -> bool:
        return self._runner is not None and not self._runner.finished

    def poll(self) -> bool:
        runner = self._runner
        if runner is None:
            return True
        runner.poll()
        if not runner.finished:
            return False
        if runner.state == DONE and runner.result:
            match = runner.result.get("match", {})
            self.matched, self.phrases = match.get("labels", []), match.get("phrases", [])
        elif runner.state == FAILED:
            self.error = runner.error or "the prompt could not be matched"
        self._cleanup()
        return True

    def stop(self) -> None:
        if self._runner is not None and not self._runner.finished:
            self._runner.cancel()
        self._cleanup()

    def _cleanup(self) -> None:
        self._runner = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
