"""Pipeline steps, one module per MLproject entry point."""
