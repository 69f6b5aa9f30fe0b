"""The findings ledger: what each finding measured, as figures with the tolerance their statistics allow.

`figures` says what every kind of finding records (a shift decision, per-metric onsets, a memory
plan, a measured peak, an error rate, the inertia curve, timings); `compare` says which figures
moved against a committed baseline and puts the move in words. Storage (the baseline files and
the one update command) belongs to the pytest layer, which keeps them with syrupy.
"""
