"""One-shot cohort learning from one labelled atlas and unlabelled scans: Bi-JROS (bi-level task-specific
decoders) and BRBS (registration-made training data). See :mod:`bijros.oneshot.train`."""
