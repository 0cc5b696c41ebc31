"""Few-shot segmentation from a few painted slices (GMRD, Cheng et al., IEEE TMI 2024): the engine part.

* :mod:`.gmrd` -- the network: a small 2D encoder, foreground and background descriptors (learned spatial
  mixtures plus masked-average and boundary-band prototypes), multiple affinity maps fused per path;
* :mod:`.episodes` -- self-supervised training episodes: two nearby slices of one structure of a synthetic
  volume painted from a label map (the SynthSeg maps: licence-clean, no real scans);
* :mod:`.train` -- ``bijros train-fewshot``; :mod:`.model_library` -- few-shot entries of the model catalog;
* :mod:`.infer` -- a volume from its annotated slices (``bijros fewshot``).

Not yet (issue 12): shipped weights (the model trained so far loses to Fill between slices), test-time
fine-tuning and the FewShotSegment section.
"""
