#!/usr/bin/env python
"""The Slicer side of a propagation: FewShotSegment's logic on a real MRML scene (slicer-core, the GUI tests'
shell) runs the engine in its child process, as Slicer does; prints the child's stage seconds (its report.json)
and what the Slicer side adds (writing the inputs, starting the child, reading the results into nodes).

    QT_QPA_PLATFORM=offscreen python Testing/Benchmarks/slicer_child_stages.py [ATLAS_ID TARGET_ID]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "Testing" / "Python"), str(REPO / "FewShotSegment"), str(REPO)]
MALF = REPO.parent / "shared" / "data" / "malf"


def main() -> int:
    import slicer_shell

    slicer_shell.install()
    from slicer_shell.testing import loadSegmentation, loadVolume

    import FewShotSegment

    atlas_id, target_id = (sys.argv[1:3] if len(sys.argv) >= 3 else ("1000", "1001"))
    target = loadVolume(MALF / f"{target_id}_t1.nii.gz", "target")
    atlas = loadVolume(MALF / f"{atlas_id}_t1.nii.gz", "atlas")
    segmentation = loadSegmentation(MALF / f"{atlas_id}_labels.nii.gz", "atlas segmentation")
    logic = FewShotSegment.FewShotSegmentLogic()
    t0 = time.perf_counter()
    nodes = logic.propagate(target, atlasVolume=atlas, atlasSegmentation=segmentation, device="cpu",
                            createJacobian=True)
    total = time.perf_counter() - t0
    seconds = nodes["report"]["seconds"]
    print("| stage | seconds |\n|---|---|")
    for name, value in seconds.items():
        print(f"| child: {name} | {value:.2f} |")
    print(f"| Slicer side: write inputs, start the child, read results into nodes | {total - seconds['wall']:.2f} |")
    print(f"| **the whole blocking call** | **{total:.2f}** |")
    print(f"\n{nodes['segmentation'].GetSegmentation().GetNumberOfSegments()} segments")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
