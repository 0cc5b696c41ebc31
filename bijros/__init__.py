"""BiJROS engine: registration and one-shot label propagation for 3D medical images.

Pure Python + torch + numpy; imports no slicer and no Qt. The Slicer modules and the
``bijros`` command line both call this package.
"""

__version__ = "0.1.0"

from bijros.errors import BijrosError, InputError
from bijros.image import Image, LabelTable

__all__ = ["BijrosError", "Image", "InputError", "LabelTable", "__version__"]
