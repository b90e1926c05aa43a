"""The indexing run: plan the work, drive the Ray stages into the stores, reconcile, verify, publish.

``pipeline.run`` calls the phases in order; each module holds one of them:
placement (cluster resources -> encoder pool), plan (full or incremental, calibration),
records (what each row became, run state, hash manifests), reconcile (rejects, deletes, counts),
verify (the gate), publish (alias moves, rollback).
"""
