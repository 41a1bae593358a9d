"""The analog optimizer emulator: physics (`physics`), fault injection (`faults`), the
device end of the byte protocol (`endpoint`) and the benchmark problems (`problems`).

    from sim.analog import DeviceEndpoint, DeviceParams
    ep = DeviceEndpoint(DeviceParams(), seed=1)          # or DeviceEndpoint.from_config(cfg.device, seed)
    driver = make_optimizer(cfg.device, n, m, transport=InProcessTransport(ep))
"""

from sim.analog.endpoint import DeviceEndpoint
from sim.analog.faults import FAULT_KINDS, FaultInjector
from sim.analog.physics import AnalogArray, DeviceParams

__all__ = ["FAULT_KINDS", "AnalogArray", "DeviceEndpoint", "DeviceParams", "FaultInjector"]
