"""Images with their world geometry, label tables, and the output folder.

* :mod:`.image` -- :class:`Image` (array + ijk_to_ras) and :class:`LabelTable`
* :mod:`.images` -- load / save NIfTI (nibabel), NRRD and MetaImage (SimpleITK), RAS <-> LPS
* :mod:`.label_tables` -- label tables as CSV, JSON or Slicer .ctbl
* :mod:`.outputs` -- a run's files, written all or nothing
"""

from bijros.io.image import Image, LabelEntry, LabelTable
from bijros.io.images import (
           LPS_TO_RAS,
           SUPPORTED,
           as_label_array,
           load_image,
           save_image,
           sitk_geometry,
           to_sitk,
)
from bijros.io.label_tables import find_label_table, read_label_table, write_label_table

__all__ = ["LPS_TO_RAS", "SUPPORTED", "Image", "LabelEntry", "LabelTable", "as_label_array", "find_label_table",
           "load_image", "read_label_table", "save_image", "sitk_geometry", "to_sitk", "write_label_table"]
