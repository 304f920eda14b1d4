"""Metrics and the control socket: per-worker counters in shared memory (:mod:`.shm`, written by
:mod:`.recorder` in the workers), the master's totals (:mod:`.totals`), the Prometheus exposition
(:mod:`.collector`, served by :mod:`.listener`) and the control socket (:mod:`.control`) behind
``appserver status`` (:mod:`.status`)."""
