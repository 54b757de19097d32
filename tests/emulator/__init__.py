"""A Kubernetes API server emulator over real HTTP, for restik's API tests.

with Emulator(fail_rate=0.0, seed=0) as emu:
    emu.write_kubeconfig(path)
    emu.create({...}); emu.get("apps/v1", "Deployment", "www", "web")
    emu.requests; emu.writes(); emu.clear_requests()
"""

from .server import Emulator, Request

__all__ = ["Emulator", "Request"]
