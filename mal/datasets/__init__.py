"""Dataset builders, looked up by name (``data.dataset`` in params.yaml)."""
