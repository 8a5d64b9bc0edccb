"""The language policy: which Python a strategy may be written in, and what its code may touch.

One layer of several, for early and clear errors: the process around the code (a fork of a zygote
with no secrets, no network, an unprivileged uid, rlimits and a seccomp filter) is what holds if the
policy is escaped.

  compile  source -> checked code object (deploy time in the API, once per source in the replica)
  guards   the run-time half: the functions RestrictedPython's rewritten code calls, the builtins,
           guarded views of modules (imported only where strategies run: it loads numpy and pandas)
  lists    the allow- and deny-lists both halves read
  errors   PolicyError (before running) and PolicyViolation (while running)

This package's top level imports neither numpy nor pandas, so the API can check code cheaply.
"""

from reconciler.policy.compile import STRATEGY_FILENAME, check_code, compile_strategy
from reconciler.policy.errors import PolicyError, PolicyViolation
from reconciler.policy.lists import ALLOWED_MODULES

__all__ = [
    "ALLOWED_MODULES",
    "STRATEGY_FILENAME",
    "PolicyError",
    "PolicyViolation",
    "check_code",
    "compile_strategy",
]
