"""Getting runs: the experiment key, cache-or-train, trials over seeds, runs side by side."""
