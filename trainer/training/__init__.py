"""Everything that decides a run's numbers: batches, methods, loop, probes, diagnostics, checkpoints, session."""
