"""Measurement names outside the device profiles (each profile names its own)."""

from __future__ import annotations

# Device liveness and connector statistics, one point per device per poll.
HEALTH_MEASUREMENT = "health"
# The edge agent's own health point carries this kind (its device tag is the agent's name).
AGENT_KIND = "agent"
