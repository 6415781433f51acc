"""The library below the entry points of steps/: one home per concern."""
