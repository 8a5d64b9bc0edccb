"""The sandbox: runs one strategy execution in a confined fork of a zygote (DESIGN.md, "The sandbox").

    sandbox = Sandbox(SandboxLimits.from_settings(settings))
    await sandbox.start()                      # spawns the zygote; logs a warning per inactive layer
    outcome = await sandbox.run(request, broker)   # never raises for what the strategy does
    sandbox.layers                             # for /health
    await sandbox.interrupt_all(); await sandbox.close()

Modules, one concern each:
  limits       SandboxLimits, the only reader of the settings
  supervisor   Sandbox (in the replica's event loop): one conversation per run, outcomes
  zygote_client  the replica's handle on its zygote: spawn it, control socket, children's exits
  classify     observed facts -> ExecutionOutcome (pure)
  protocol     length-prefixed JSON frames, capped
  zygote       the preloaded, network-less parent of every child (`python -m reconciler.sandbox.zygote`),
               and its template, which clones them
  confine      the OS layers: network namespace and filesystem view once; per child PID and IPC
               namespaces (clone), cgroup, fds, rlimits, uid, no_new_privs, seccomp
  seccomp      the seccomp allow-list (compiled once with libseccomp, installed per child with one prctl)
  host         what the replica claims from the host for its children: a uid block, a memory cgroup
  layers       the layers by name, what is lost without each (for /health and start-up warnings)
  child        what runs in the confined fork: namespace, output capture, limits as exceptions, report
  client_proxy CoinDCXClient as the strategy sees it, and ExchangeError
  jsonable     RESULT/STATE to JSON

The language policy (compile-time check and run-time guards) is its own package, reconciler.policy.
"""

from reconciler.sandbox.limits import SandboxLimits
from reconciler.sandbox.supervisor import Sandbox, harden_replica_process

__all__ = ["Sandbox", "SandboxLimits", "harden_replica_process"]
