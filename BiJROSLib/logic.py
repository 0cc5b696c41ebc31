"""Console / GUI logic of BiJROS: pairwise registration and atlas label propagation.

Two plain classes (no Slicer base class; the modules' Logic classes inherit from them and
from ``ScriptedLoadableModuleLogic``). The scene is ``slicer.mrmlScene`` unless ``scene=``
is given. Heavy work runs in a child process (:mod:`.process`); results become nodes only
when the run succeeded, all together or none (:mod:`.scene`).

Blocking, for the Python console and tests::

    logic = RegistrationLogic()
    nodes = logic.register(fixedNode, movingNode, method="deformable")
    nodes["transform"]      # vtkMRMLGridTransformNode, moving -> fixed (resampling convention)
    nodes["warpedVolume"]   # the moving volume resampled onto the fixed grid
    movingNode.SetAndObserveTransformNodeID(nodes["transform"].GetID())  # see it aligned

    nodes = logic.register(fixedNode, movingNode, method="affine", movingSegmentation=segNode,
                           createJacobian=True, preset="fast")

    propagation = PropagationLogic()
    propagation.atlasNames()                          # ['mni152-desikan-killiany', 'mni152-aal']
    nodes = propagation.propagate(targetNode, atlasName="mni152-desikan-killiany")
    nodes = propagation.propagate(targetNode, atlasVolume=atlasNode, atlasSegmentation=atlasSegNode)
    nodes["segmentation"]   # vtkMRMLSegmentationNode on the target with the atlas's names/colours

Non-blocking, for the GUI (poll from a ``qt.QTimer``)::

    job = logic.startRegistration(fixedNode, movingNode, method="deformable")
    job.poll()              # new progress events; job.fraction, job.message, job.state
    job.cancel()            # kills the engine's process tree; the scene is untouched
    if job.state == "done":
        nodes = logic.finishJob(job)
"""

from __future__ import annotations

from .jobs import RegistrationJob
from .propagation import PropagationLogic
from .registration import RegistrationLogic

__all__ = ["PropagationLogic", "RegistrationJob", "RegistrationLogic"]
