#!/usr/bin/env bash
# Make sure dockerd is running and this node is an active single-node swarm. Idempotent.
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/director-dockerd.log}"
DOCKER_WAIT_SECONDS="${DOCKER_WAIT_SECONDS:-30}"

if docker info >/dev/null 2>&1; then
    echo "start-docker: dockerd already running"
else
    if ! command -v dockerd >/dev/null 2>&1; then
        echo "start-docker: dockerd not found; run scripts/install-deps.sh first" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$DOCKERD_LOG")"
    echo "start-docker: starting dockerd (log: $DOCKERD_LOG)"
    # setsid + nohup: the daemon must outlive this shell and its process group.
    # Never pass --bridge=none: it deletes docker0, which the databases bind to.
    DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid nohup dockerd --iptables=true --no-new-privileges \
        >>"$DOCKERD_LOG" 2>&1 </dev/null &
    deadline=$((SECONDS + DOCKER_WAIT_SECONDS))
    until docker info >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "start-docker: dockerd did not come up within ${DOCKER_WAIT_SECONDS}s;" \
                "last lines of $DOCKERD_LOG:" >&2
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
    echo "start-docker: dockerd is up"
fi

state="$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || true)"
if [ "$state" != "active" ]; then
    echo "start-docker: swarm state '${state}', initialising a single-node swarm"
    docker swarm init --advertise-addr 127.0.0.1 --default-addr-pool 172.30.0.0/16 >/dev/null
fi
echo "start-docker: swarm $(docker info --format '{{.Swarm.LocalNodeState}}')"
