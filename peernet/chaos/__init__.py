"""Chaos harness: fault scenarios (kills, stops, bootstrap loss, network loss, partitions) against a local cluster."""
