"""The sandbox: runs one strategy execution in a confined fork of a zygote (see DESIGN.md, "The sandbox")."""

from reconciler.sandbox.limits import SandboxLimits
from reconciler.sandbox.supervisor import Sandbox, harden_replica_process

__all__ = ["Sandbox", "SandboxLimits", "harden_replica_process"]
