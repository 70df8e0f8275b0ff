"""Device simulators that speak the real protocols, with fault injection."""
