"""The weekly cycle: relabel → dataset → train → register → gate → promote, the bootstrap of a
first student, and the schedule (``schedule_runs``); the ``trainer`` command group.

Orchestrates only: it neither trains nor gates itself.
"""
