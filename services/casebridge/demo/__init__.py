"""The demonstration: its case scenario, the local network of service processes, the bootstrap."""
