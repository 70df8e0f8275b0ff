"""Simulator behaviour per device kind: module `<kind>` has `make(ctx)` and `FAULTS`.

Adding a device kind to the district takes its profile and one module here; the
district runner finds the module by the kind's name.
"""
