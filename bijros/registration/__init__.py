"""Registration: working grid, affine, deformable (instance optimisation), learned, and the pipeline.

* :mod:`.grid` -- voxel grids and resampling between world grids (torch)
* :mod:`.preprocess` -- input checks, intensity normalisation, the working grid
* :mod:`.similarity` -- NCC, LNCC, mutual information, MIND-SSC, smoothness penalties
* :mod:`.affine` -- centre of mass, then rigid and affine stages
* :mod:`.deformable` -- training-free instance optimisation (ConvexAdam-like)
* :mod:`.learned` -- one pass of a learned model from :mod:`bijros.models`
* :mod:`.field` -- total mapping, warping of images and labels, Jacobian QC
* :mod:`.methods` -- the method table (``bijros/data/methods.json``), torch-free
* :mod:`.pipeline` -- ``register`` / ``propagate``: the one data path

Nothing is imported here, so ``bijros.registration.methods`` stays importable without torch.
"""
