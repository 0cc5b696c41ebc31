"""Few-shot segmentation from a few painted slices (GMRD, Cheng et al., IEEE TMI 2024): work in progress.

* :mod:`.gmrd` -- the network: a small 2D encoder, foreground and background descriptors (learned spatial
  mixtures plus masked-average and boundary-band prototypes), multiple affinity maps fused per path;
* :mod:`.episodes` -- self-supervised training episodes: two nearby slices of one structure of a synthetic
  volume painted from a label map (the SynthSeg maps: licence-clean, no real scans).

Not yet: the trainer and its shipped weights, inference over a volume (the chunking protocol), the command
line and the FewShotSegment section (issue 12). Nothing user-facing uses this package yet.
"""
