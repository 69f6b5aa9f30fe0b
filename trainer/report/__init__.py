"""Evidence for readers: plots and tables of runs, decisions, curves and memory plans."""
