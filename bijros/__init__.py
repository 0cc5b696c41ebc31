"""BiJROS engine: registration and one-shot label propagation for 3D medical images.

Pure Python + torch + numpy; imports no slicer and no Qt. The Slicer modules and the
``bijros`` command line both call this package. Importing ``bijros`` loads neither torch nor
numpy; the console API below is imported on first use::

    import bijros
    fixed = bijros.load_image("subject.nii.gz")
    atlas = bijros.load_image("atlas.nii.gz")
    labels = bijros.load_image("atlas_labels.nii.gz", label_map=True)
    result = bijros.propagate(atlas, labels, fixed, bijros.RegistrationOptions(method="io"))
    bijros.write_outputs(result, "out/")

Subpackages, one per capability: :mod:`bijros.io` (images, label tables, outputs),
:mod:`bijros.registration` (grid, affine, deformable, learned, pipeline), :mod:`bijros.models`
(networks, weights, the model library), :mod:`bijros.training`, :mod:`bijros.atlas`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from bijros.errors import BijrosError, CancelledError, DeviceError, InputError

#: console API name -> the module that defines it (imported on first use)
_LAZY = {
    "Image": "bijros.io.image",
    "LabelTable": "bijros.io.image",
    "load_image": "bijros.io.images",
    "save_image": "bijros.io.images",
    "read_label_table": "bijros.io.label_tables",
    "write_label_table": "bijros.io.label_tables",
    "write_outputs": "bijros.io.outputs",
    "RegistrationOptions": "bijros.registration.pipeline",
    "RegistrationResult": "bijros.registration.pipeline",
    "register": "bijros.registration.pipeline",
    "propagate": "bijros.registration.pipeline",
    "evaluate_labels": "bijros.metrics",
}

__all__ = ["BijrosError", "CancelledError", "DeviceError", "InputError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bijros' has no attribute '{name}'")
