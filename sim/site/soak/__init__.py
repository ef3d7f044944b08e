"""The soak night: a long simulated night with faults injected, and its reconciliation."""
