"""The sandbox's isolation layers by name: what /health reports and start-up warns about.

Each entry says what an operator loses on a host that does not allow the layer, and what it needs.
`user_namespace` is not here: it is only how a non-root replica obtains the namespaces below, each
reported on its own (as root it is never needed).
"""

from __future__ import annotations

LAYERS: dict[str, str] = {
    "network_namespace": "children can reach the network and the database (needs root or user namespaces)",
    "filesystem_view": "children can read every world-readable file of the host, /proc included "
    "(needs root or user namespaces, and pivot_root)",
    "pid_namespace": "children can see other processes and name them by pid (needs root or user namespaces)",
    "ipc_namespace": "without seccomp, SysV IPC objects would be shared with the host and outlive a run "
    "(needs root or user namespaces)",
    "distinct_uids": "concurrent children share one uid; the PID namespace and seccomp still keep them apart "
    "(needs a root replica)",
    "cgroup_memory": "memory is bounded by RLIMIT_AS only, not kernel memory or copy-on-write copies "
    "(needs a writable memory cgroup: v1, or a delegated v2 subtree)",
    "seccomp": "every system call is open to children, e.g. exec, SysV IPC, fcntl signal ownership (needs libseccomp)",
    "privilege_drop": "children keep the replica's identity and capabilities",
    "rlimits": "no CPU, address-space, file or descriptor limits per child",
    "no_new_privs": "setuid programs could raise a child's privileges",
    "language_policy": "no early, friendly policy errors at deploy",
}
LAYER_NAMES = tuple(LAYERS)


def inactive(layers: dict[str, bool]) -> list[str]:
    return [name for name in LAYER_NAMES if not layers.get(name)]


def warning(name: str) -> str:
    return f"sandbox isolation layer {name!r} is NOT active on this host: {LAYERS[name]}"
