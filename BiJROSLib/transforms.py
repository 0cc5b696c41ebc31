"""Engine displacement fields and affines -> Slicer transform nodes.

Conventions (see docs/ENGINE_CONTRACT.md):

* ``displacement_ras_mm`` (I, J, K, 3) lives on the fixed image's grid and is ``phi(x) - x``
  in RAS millimetres: the moving image is sampled at ``x + d(x)``. That is Slicer's
  *resampling* direction, i.e. the transform **from parent** (fixed/world) to the moving
  image's space. It becomes a ``vtkOrientedGridTransform`` (RAS vectors, grid geometry
  with the fixed image's origin, spacing and directions) set with
  ``SetAndObserveTransformFromParent``.
* ``displacement.nii.gz`` is the same field written as an ITK displacement field (LPS
  vectors); it is read here with nibabel and converted to RAS. A test checks that this
  agrees with Slicer's own ``vtkMRMLTransformStorageNode`` reader.
* ``affine_ras`` / ``affine.tfm``: 4x4 mapping fixed RAS -> moving RAS, also the
  resampling direction: ``SetMatrixTransformFromParent``.

Putting the moving volume under the resulting node shows it aligned with the fixed volume.

Console example::

    from BiJROSLib.transforms import gridTransformNodeFromFile
    node = gridTransformNodeFromFile("out/displacement.nii.gz", "atlas to subject", slicer.mrmlScene)
    movingVolume.SetAndObserveTransformNodeID(node.GetID())
"""

from __future__ import annotations

import os

import numpy as np

from .volumes import _arrayToVtkMatrix

LPS_TO_RAS_VECTOR = np.array([-1.0, -1.0, 1.0])


def transformName(movingName: str, fixedName: str, suffix: str = "") -> str:
    """'<moving> to <fixed>[ suffix] (BiJROS)'."""
    return f"{movingName} to {fixedName}{' ' + suffix if suffix else ''} (BiJROS)"


def orientedGridTransform(displacementRasMm: np.ndarray, ijkToRas: np.ndarray):
    """``vtkOrientedGridTransform`` holding a (I, J, K, 3) RAS-mm displacement on an ijk->RAS grid."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    displacement = np.asarray(displacementRasMm, dtype=np.float32)  # float32 like the file: half the memory
    if displacement.ndim != 4 or displacement.shape[3] != 3:
        raise ValueError(f"A displacement field must have shape (I, J, K, 3), not {displacement.shape}.")
    ijkToRas = np.asarray(ijkToRas, dtype=np.float64)
    spacing = np.linalg.norm(ijkToRas[:3, :3], axis=0)
    directions = ijkToRas[:3, :3] / spacing[None, :]

    grid = vtk.vtkImageData()
    grid.SetDimensions(*displacement.shape[:3])
    grid.SetOrigin(*ijkToRas[:3, 3])
    grid.SetSpacing(*spacing)
    # VTK images are stored with i fastest: (k, j, i, 3) C order
    flat = np.ascontiguousarray(displacement.transpose(2, 1, 0, 3)).reshape(-1, 3)
    vectors = numpy_support.numpy_to_vtk(flat, deep=True, array_type=vtk.VTK_FLOAT)
    vectors.SetName("displacement")
    grid.GetPointData().SetScalars(vectors)

    directionMatrix = np.eye(4)
    directionMatrix[:3, :3] = directions
    transform = slicer.vtkOrientedGridTransform()
    transform.SetDisplacementGridData(grid)
    transform.SetGridDirectionMatrix(_arrayToVtkMatrix(directionMatrix))
    # linear, as ITK and the engine: the engine's field may live on every 2nd voxel centre and its warped
    # image and labels were made with the trilinear interpolation of it (Slicer's own reader uses cubic)
    transform.SetInterpolationModeToLinear()
    return transform


def readDisplacementField(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(displacement_ras_mm (I, J, K, 3), ijk_to_ras) from an ITK displacement field NIfTI (LPS vectors)."""
    import nibabel

    image = nibabel.load(str(path))
    data = np.asarray(image.dataobj, dtype=np.float32)
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    if data.ndim != 4 or data.shape[3] != 3:
        raise ValueError(f"{path} is not a 3D displacement field (shape {data.shape}).")
    return data * LPS_TO_RAS_VECTOR, np.asarray(image.affine, dtype=np.float64)


def setGridTransform(transformNode, displacementRasMm: np.ndarray, ijkToRas: np.ndarray) -> None:
    """Make ``transformNode`` (any vtkMRMLTransformNode) hold the field as its FromParent transform."""
    transformNode.SetAndObserveTransformFromParent(orientedGridTransform(displacementRasMm, ijkToRas))


def gridTransformNodeFromArray(displacementRasMm, ijkToRas, name: str, scene, node=None):
    """Grid transform node (new, or ``node`` refilled) from an in-memory RAS displacement."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", name)
    setGridTransform(node, displacementRasMm, ijkToRas)
    return node


def gridTransformNodeFromFile(path: str | os.PathLike, name: str, scene, node=None):
    """Grid transform node (new, or ``node`` refilled) from the engine's displacement.nii.gz."""
    displacement, ijkToRas = readDisplacementField(path)
    return gridTransformNodeFromArray(displacement, ijkToRas, name, scene, node)


def readItkAffine(path: str | os.PathLike) -> np.ndarray:
    """4x4 fixed RAS -> moving RAS matrix from an ITK (LPS) affine .tfm file."""
    import SimpleITK as sitk

    transform = sitk.ReadTransform(str(path))
    if transform.GetDimension() != 3:
        raise ValueError(f"{path} is not a 3D transform.")
    affine = sitk.AffineTransform(3)
    try:
        affine = sitk.AffineTransform(transform)
    except (RuntimeError, TypeError):  # a composite holding one affine
        composite = sitk.CompositeTransform(transform)
        affine = sitk.AffineTransform(composite.GetNthTransform(0))
    matrix = np.array(affine.GetMatrix()).reshape(3, 3)
    center = np.array(affine.GetCenter())
    translation = np.array(affine.GetTranslation())
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = translation + center - matrix @ center
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps @ flip


def setLinearTransform(transformNode, affineRas: np.ndarray) -> None:
    """Make ``transformNode`` hold the fixed->moving (resampling) matrix as its FromParent transform."""
    transformNode.SetMatrixTransformFromParent(_arrayToVtkMatrix(np.asarray(affineRas, dtype=np.float64)))


def linearTransformNodeFromMatrix(affineRas: np.ndarray, name: str, scene, node=None):
    """Linear transform node (new, or ``node`` refilled) from a fixed->moving RAS 4x4 matrix."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    setLinearTransform(node, affineRas)
    return node


def linearTransformNodeFromFile(path: str | os.PathLike, name: str, scene, node=None):
    """Linear transform node from the engine's affine.tfm (ITK, LPS)."""
    return linearTransformNodeFromMatrix(readItkAffine(path), name, scene, node)
