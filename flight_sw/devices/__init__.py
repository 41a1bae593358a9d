"""Devices: the optimizer interface and its backends.

- `optimizer`: the interface solve(Q, B) -> (X, SolveReport) and the digital Cholesky solver;
- `protocol`: the analog optimizer's byte protocol (docs/analog_device.md);
- `transport`: in-process, TCP and serial links, `transport_from_url`;
- `driver`: the fault-tolerant analog driver (refinement, verification, health, fallback);
- `factory`: `make_optimizer(device_cfg, n, m, transport=None)`.
"""
