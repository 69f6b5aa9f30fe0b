"""Questions that train as needed, then judge: early decision, error rates, the inertia curve."""
