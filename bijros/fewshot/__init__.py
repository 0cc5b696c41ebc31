"""Few-shot segmentation from a few painted slices (GMRD, Cheng et al., IEEE TMI 2024).

* :mod:`.gmrd` -- the network: a small 2D encoder, foreground and background descriptors (learned spatial
  mixtures plus masked-average and boundary-band prototypes), multiple affinity maps fused per path;
* :mod:`.episodes` -- self-supervised training episodes: two nearby slices of one structure of a synthetic
  volume painted from a label map (the SynthSeg maps: licence-clean, no real scans);
* :mod:`.train` -- ``bijros train-fewshot``; :mod:`.model_library` -- few-shot entries of the model catalog;
* :mod:`.prior` -- the structure's shape interpolated between the annotated slices (signed distances);
* :mod:`.finetune` -- test-time fine-tuning on the annotated slices;
* :mod:`.infer` -- a volume from its annotated slices, the model fused with the shape (``bijros fewshot``).
"""
