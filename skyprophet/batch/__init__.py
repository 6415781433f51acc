"""Batch scoring: reading schedules, the validity tally, the engines, sinks and the report."""
