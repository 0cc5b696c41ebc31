"""Training of the learned registration models.

* :mod:`.synth` -- SynthMorph-style synthetic pairs from label maps
* :mod:`.losses` -- soft Dice, smoothness, LNCC and flow supervision
* :mod:`.validation` -- held-out validation pairs and scores
* :mod:`.trainer` -- the resumable ``train-registration`` loop and export
"""
