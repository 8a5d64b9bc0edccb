# strategy-executor: one image for the API (`serve`) and the reconciler replicas (`worker`).
#
#   docker build -t strategy-executor .
#   docker run --cap-add SYS_ADMIN --security-opt apparmor=unconfined \
#     -e DATABASE_URL=... -e EXECUTOR_API_TOKEN=... -e ENCRYPTION_KEY=... strategy-executor worker
#
# What the sandbox needs from the container runtime (see "Running in containers" in the README):
# - CAP_SYS_ADMIN, for the namespaces the zygote creates once (network, and where the kernel allows
#   them mount, PID and IPC). Docker's and containerd's default seccomp profiles allow unshare(2),
#   mount(2) and clone(2) with namespace flags only to a container that holds CAP_SYS_ADMIN, so
#   the default profile can stay. Without it: no network namespace (the seccomp filter still refuses
#   socket(2), but one layer less), and no private mount/PID/IPC view; /health and the start-up log
#   say which layers are off.
# - AppArmor unconfined (or a profile that allows mount) on hosts where the docker-default AppArmor
#   profile is enforced: it denies mount(2) even with CAP_SYS_ADMIN.
# - CAP_SETUID/CAP_SETGID (in Docker's default set): each execution runs as its own unprivileged uid.
#   The container runs as root for that reason; user code never does.
# - A writable, delegated cgroup (cgroup v2) for per-execution memory cgroups; containers rarely
#   have one, and then the address-space limit is the floor that holds.
# The language policy, rlimits, no_new_privs and the seccomp filter need nothing from the runtime.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /app
# Dependencies first: a code change does not reinstall pandas.
COPY pyproject.toml README.md ./
RUN mkdir -p api reconciler && touch api/__init__.py reconciler/__init__.py \
    && /opt/venv/bin/pip install . && /opt/venv/bin/pip uninstall -y strategy-executor
COPY alembic.ini ./
COPY alembic ./alembic
COPY api ./api
COPY reconciler ./reconciler
COPY examples ./examples
# Editable: migrations and the sandbox zygote are found next to the package, in /app.
RUN /opt/venv/bin/pip install --no-deps -e .

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libseccomp2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8003 \
    LOG_FORMAT=json
EXPOSE 8003 9100
ENTRYPOINT ["strategy-executor"]
CMD ["serve"]
