"""linli.cloud.notifier.engine."""
