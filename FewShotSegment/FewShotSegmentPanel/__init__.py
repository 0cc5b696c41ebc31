"""The FewShotSegment panel, one file per section: :mod:`.target`, :mod:`.atlas`, :mod:`.advanced`,
:mod:`.run` (Propagate / Cancel, progress, results). The shared parts are in ``BiJROSLib``."""
