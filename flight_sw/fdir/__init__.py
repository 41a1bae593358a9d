"""FDIR: modes, health monitoring and fault responses."""
