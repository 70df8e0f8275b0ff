"""Measurement names outside the device profiles (each profile names its own)."""

from __future__ import annotations

# Device liveness and connector statistics, one point per device per poll.
HEALTH_MEASUREMENT = "health"
