"""Devices: the optimizer interface and its drivers."""
