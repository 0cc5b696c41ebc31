"""Cohorts: ``bijros batch`` runs a manifest of jobs with long-lived workers, resumably, sharded under torchrun.

* :mod:`.manifest` -- rows -> checked jobs (command lines), with line numbers
* :mod:`.shard` -- the split over torchrun ranks (a balanced partition)
* :mod:`.records` -- per-job records: what is complete and skipped on a rerun
* :mod:`.worker` -- a long-lived process running job after job as the single commands do
* :mod:`.run` -- the coordinator: workers, progress, the gathered summary.csv
"""
