"""A Kubernetes API server emulator over real HTTP, for restik's API tests.

with Emulator(fail_rate=0.0, seed=0) as emu:
    emu.write_kubeconfig(path)
    emu.create({...}); emu.get("apps/v1", "Deployment", "www", "web")
    emu.requests; emu.writes(); emu.clear_requests()

with Emulator(cluster=True) as emu:     # + controllers, kubelets, admission (cluster.py)
    emu.create(deployment); emu.settle()  # ReplicaSets and Ready pods exist now
    emu.wait_for(lambda: ..., timeout=5)
    rv = emu.resource_version; ...; emu.history("v1", "Pod", rv)  # every change since
"""

from .server import Emulator, Request

__all__ = ["Emulator", "Request"]
