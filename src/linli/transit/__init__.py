"""linli.transit."""
