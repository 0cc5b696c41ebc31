"""Pictures of a result a clinician can glance at (``qc.png``): see :mod:`bijros.qc.picture`."""
