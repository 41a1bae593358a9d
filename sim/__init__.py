"""Simulator: orbital and power truth, payload scene, device emulator, HIL bench."""
