"""The cloud side: the alert notifier and its HTTP API."""
