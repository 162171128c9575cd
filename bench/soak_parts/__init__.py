"""The parts of bench/soak.py, the soak and faults benchmark, one job a module: the fixed
numbers (constants), the things it keeps track of (model), the state of a run (state), the
line's start-up (topology), what the PBXs say (watch), the callers (callers), the fault
schedule (faults), reading back the calls (records), the report of calls and windows (report)
and the details of what went wrong (details), put together in run.Soak.

Imported as ``bench.soak_parts`` with the repository root on sys.path, as bench/soak.py sets
it up before importing them.
"""
