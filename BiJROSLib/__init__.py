"""BiJROS MRML bridge, shared by the BiJROSRegistration and FewShotSegment modules.

Nothing here imports Qt at import time, so the package works in Slicer's Python console,
in Slicer's self-tests and under plain pytest with the ``slicer-core`` wheel.

* :mod:`.volumes` -- volume / segmentation nodes <-> :class:`bijros.io.image.Image`
* :mod:`.transforms` -- engine displacement / affine -> grid / linear transform nodes
* :mod:`.segmentations` -- label maps -> segmentation nodes, Jacobian -> coloured volume
* :mod:`.process` -- the engine command line in a child process, with progress and cancel
* :mod:`.dependencies` -- check / install the Python packages the engine needs
* :mod:`.scene` -- all-or-nothing node creation (roll back on failure)
* :mod:`.atlases` -- the atlas library catalog (Resources/Atlases/atlas_library.json)
* :mod:`.logic` -- ``RegistrationLogic`` and ``PropagationLogic`` (console API)
"""
