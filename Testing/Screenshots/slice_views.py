#!/usr/bin/env python
"""Render a propagation result in Slicer's own slice views, headless: slicer-core's slice logic blends the
target (background) and the Jacobian map (foreground), and Slicer's segmentation displayable manager
draws the propagated labels as outlines, exactly as the FewShotSegment panel leaves the views
(``BiJROSLib.views.showInSliceViews``). OpenGL comes from Mesa through EGL without a display.

    python Testing/Screenshots/slice_views.py OUT_DIR TARGET_IMAGE Resources/Screenshots/SliceViews.png

``OUT_DIR`` is a ``bijros propagate`` output folder (labels.nii.gz, labels.csv, jacobian.nii.gz).
trame-slicer (the suggested wrapper) does not import against slicer-core 5.13.31053 (it needs
``vtkMRMLLayerDMObjectEventObserverScripted``, absent from that build), so the views are set up here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
os.environ.setdefault("EGL_PLATFORM", "surfaceless")
os.environ.setdefault("LIBGL_ALWAYS_SOFTWARE", "1")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

VIEWS = (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal"))
SIZE = 420


def render(out_dir: Path, target: Path, png: Path) -> None:
    import numpy as np
    import slicer
    import vtk
    from PIL import Image as PILImage
    from vtk.util import numpy_support

    from bijros.io import load_image
    from BiJROSLib.segmentations import jacobianImageToVolumeNode, labelImageToSegmentationNode
    from BiJROSLib.volumes import imageToVolumeNode

    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    app.GetColorLogic().SetMRMLScene(scene)
    app.GetColorLogic().AddDefaultColorNodes()
    app.SetSliceLogics(vtk.vtkCollection())
    app.SetViewLogics(vtk.vtkCollection())
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(scene)
    segmentations.SetMRMLApplicationLogic(app)
    factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
    factory.SetMRMLApplicationLogic(app)
    if not factory.IsDisplayableManagerRegistered("vtkMRMLSegmentationsDisplayableManager2D"):
        factory.RegisterDisplayableManager("vtkMRMLSegmentationsDisplayableManager2D")
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)

    fixed = imageToVolumeNode(load_image(target), "target", scene)
    labels = load_image(out_dir / "labels.nii.gz", label_map=True)
    segmentation = labelImageToSegmentationNode(labels, "propagated", fixed, scene, labelTable=labels.label_table)
    jacobian = jacobianImageToVolumeNode(load_image(out_dir / "jacobian.nii.gz"), "Jacobian", fixed, scene)
    segmentation.CreateDefaultDisplayNodes()
    display = segmentation.GetDisplayNode()
    display.SetVisibility2DFill(False)
    display.SetVisibility2DOutline(True)

    tiles, keep = [], []
    for name, orientation in VIEWS:
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        node = logic.AddSliceNode(name)
        node.SetOrientation(orientation)
        app.GetSliceLogics().AddItem(logic)
        composite = logic.GetSliceCompositeNode()
        composite.SetBackgroundVolumeID(fixed.GetID())
        composite.SetForegroundVolumeID(jacobian.GetID())
        composite.SetForegroundOpacity(0.4)
        renderer, window = vtk.vtkRenderer(), vtk.vtkRenderWindow()
        window.SetOffScreenRendering(1)
        window.AddRenderer(renderer)
        window.SetSize(SIZE, SIZE)
        interactor = vtk.vtkRenderWindowInteractor()  # the displayable managers need one, as in qMRMLSliceView
        interactor.SetRenderWindow(window)
        interactor.Initialize()
        node.SetDimensions(SIZE, SIZE, 1)
        logic.FitSliceToAll()
        mapper = vtk.vtkImageMapper()  # the blended slice image, as qMRMLSliceView shows it
        mapper.SetColorWindow(255)
        mapper.SetColorLevel(127.5)
        mapper.SetInputConnection(logic.GetImageDataConnection())
        actor = vtk.vtkActor2D()
        actor.SetMapper(mapper)
        renderer.AddViewProp(actor)
        group = factory.InstantiateDisplayableManagers(renderer)
        group.SetMRMLDisplayableNode(node)
        window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(window)
        grab.Update()
        image = grab.GetOutput()
        w, h, _ = image.GetDimensions()
        rgb = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, -1)[::-1, :, :3]
        tiles.append(rgb)
        keep.append((logic, window, interactor, group))
    page = np.concatenate(tiles, axis=1)
    png.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.ascontiguousarray(page)).save(png)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    render(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
    print(f"wrote {sys.argv[3]}")
