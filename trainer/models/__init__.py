"""Where a model's weights come from (registry, sources) and what its architecture is (bundled configs)."""
