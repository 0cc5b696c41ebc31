"""The modules' acknowledgement text: the methods this version uses."""

ACKNOWLEDGEMENT = """
<p>This version of BiJROS uses the methods of these papers (please cite the ones you use):</p>
<ul>
<li>ConvexAdam: H. Siebert, L. Hansen, M. P. Heinrich, "Fast 3D registration with accurate optimisation and
little learning for Learn2Reg 2021" (the training-free deformable stage follows its approach).</li>
<li>EOIR: encoder-only image registration, 2024 (the architecture of the shipped learned model).</li>
<li>SynthMorph: M. Hoffmann et al., "SynthMorph: learning contrast-invariant registration without acquired
images", IEEE TMI 2022 (how the shipped model's training pairs are synthesised from label maps).</li>
<li>TextSCF: H. Zhang et al., "Spatially covariant image registration with text prompts", 2023/24 (the
text-filter head of the "Text-steered" methods).</li>
<li>Bi-JROS: X. Fan et al., "Bi-level learning of task-specific decoders for joint registration and
one-shot medical image segmentation", CVPR 2024 (cohort one-shot learning).</li>
<li>BRBS: Y. He et al., "Learning better registration to learn better few-shot medical image
segmentation: authenticity, diversity, and robustness", IEEE TNNLS 2022 (the second cohort recipe).</li>
<li>GMRD: Z. Cheng et al., "Few-shot medical image segmentation via generation of multiple
representative descriptors", IEEE TMI 2024 (the slice model of few-shot segmentation from painted slices).</li>
<li>Shape-based interpolation: S. P. Raya and J. K. Udupa, "Shape-based interpolation of multidimensional
objects", IEEE TMI 1990 (the shape between painted slices that the slice model is fused with).</li>
</ul>
"""
