"""The BiJROSRegistration panel, one file per section: :mod:`.inputs`, :mod:`.outputs`, :mod:`.advanced`,
:mod:`.run` (Apply / Cancel, progress, results). The shared parts are in ``BiJROSLib``."""
