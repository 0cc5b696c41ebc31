"""BiJROS's Slicer-side library, shared by the BiJROSRegistration and FewShotSegment modules.

Installed by the extension's CMake next to the scripted modules (and the engine package
``bijros``), so both modules import it without any path set-up. Nothing here imports Qt or the
engine at import time: the package loads in Slicer's Python console, in Slicer's self-tests,
under plain pytest with the ``slicer-core`` wheel, and before the engine's packages are installed.

* :mod:`.volumes` -- volume / segmentation nodes <-> :class:`bijros.io.image.Image`
* :mod:`.transforms` -- engine displacement / affine -> grid / linear transform nodes
* :mod:`.segmentations` -- label maps -> segmentation nodes, Jacobian -> coloured volume
* :mod:`.masks` -- a segmentation or labelmap as the fixed / target mask
* :mod:`.scene` -- all-or-nothing node creation (roll back on failure)
* :mod:`.process` -- ``python -m bijros`` (or pip) in a child process, with progress and cancel
* :mod:`.jobs` -- one engine run (or pip install) seen from Slicer
* :mod:`.options` -- console / panel options -> engine arguments; the cross-contrast warning
* :mod:`.results` -- a finished run's files -> nodes
* :mod:`.dependencies` -- check / install the Python packages the engine needs
* :mod:`.atlases` -- the atlas library (the engine's one catalog, bijros/data/atlases.json)
* :mod:`.multi_atlas` -- folder libraries, ranking and multi-atlas propagation (console + panel)
* :mod:`.engine_logic`, :mod:`.registration`, :mod:`.propagation` -- the console API, gathered in :mod:`.logic`
* :mod:`.panel` -- what the two module panels share; :mod:`.bindings` -- widgets <-> parameter node
"""
