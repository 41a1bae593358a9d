"""The simulator's side of a ground terminal: an interface only. The modules that run a mission
with one never import ground_tools (DESIGN.md: nothing in sim below its CLI does)."""

import json
import subprocess
import sys

MODULES = ("sim.ground_link", "sim.simulation", "sim.runner", "sim.uplink_file")


def test_the_mission_modules_import_no_ground_tools():
    code = ("import importlib, json, sys\n"
            f"for m in {MODULES!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert "sim.simulation" in loaded  # the check sees what it imports
    assert not [m for m in loaded if m.split(".")[0] == "ground_tools"]
