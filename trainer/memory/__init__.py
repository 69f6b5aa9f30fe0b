"""Memory: named training recipes, the traced step, the planner, and measured peaks."""
