"""Verdicts as pure functions of run records: shift tests, per-metric onsets, curve fits, error-rate arithmetic."""
