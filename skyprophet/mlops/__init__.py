"""The MLflow side: tracking set-up, the registry's moves, tag names, artifact digests."""
