"""The shared catalog: device profiles, the reading model, line protocol and names."""
