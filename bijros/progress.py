"""Progress reporting: a tqdm bar for people, JSON lines for the Slicer modules, or nothing.

JSON mode writes one object per line to stdout:
``{"stage": "deformable", "fraction": 0.42, "message": "...", "eta_s": 12.3}``
where ``fraction`` is the overall fraction of the whole run (0..1).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

# share of the whole run that each stage takes (measured on CPU; good enough for a bar)
STAGE_WEIGHTS = {"load": 0.05, "affine": 0.2, "learned": 0.05, "deformable": 0.5, "prompt": 0.2, "warp": 0.15, "write": 0.05}


class Progress:
    """Turns per-stage fractions into an overall fraction and forwards them to a sink."""

    def __init__(self, sink: Callable[[str, float, str, float | None], None] | None = None, stages=None):
        self.sink = sink
        self.weights = dict(stages or STAGE_WEIGHTS)
        self.start = time.monotonic()
        self.last = 0.0

    def stage(self, name: str) -> Callable[[float, str], None]:
        names = list(self.weights)
        before = sum(self.weights[n] for n in names[: names.index(name)]) if name in self.weights else self.last
        width = self.weights.get(name, 0.0)
        total = sum(self.weights.values()) or 1.0

        def report(fraction: float, message: str = "") -> None:
            overall = min(1.0, max(self.last, (before + width * max(0.0, min(1.0, fraction))) / total))
            self.last = overall
            elapsed = time.monotonic() - self.start
            eta = elapsed * (1 - overall) / overall if overall > 0.02 else None
            if self.sink:
                self.sink(name, overall, message, eta)

        return report

    def skip(self, name: str) -> None:
        self.weights.pop(name, None)

    def done(self, message: str = "done") -> None:
        self.last = 1.0
        if self.sink:
            self.sink("done", 1.0, message, 0.0)


def json_sink(stream=None) -> Callable[[str, float, str, float | None], None]:
    out = stream or sys.stdout

    def sink(stage: str, fraction: float, message: str, eta: float | None) -> None:
        record = {"stage": stage, "fraction": round(fraction, 4), "message": message,
                  "eta_s": None if eta is None else round(eta, 1)}
        out.write(json.dumps(record) + "\n")
        out.flush()

    return sink


def tqdm_sink() -> tuple[Callable[[str, float, str, float | None], None], Callable[[], None]]:
    from tqdm import tqdm

    bar = tqdm(total=1000, file=sys.stderr, bar_format="{desc:<42}{percentage:3.0f}%|{bar}| {elapsed}<{remaining}")

    def sink(stage: str, fraction: float, message: str, eta: float | None) -> None:
        bar.set_description_str((message or stage)[:42])
        bar.update(int(fraction * 1000) - bar.n)

    return sink, bar.close
