"""The /ping and /health sidecar beside the model server (``python -m sidecar.app``)."""
