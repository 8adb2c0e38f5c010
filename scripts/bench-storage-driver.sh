#!/usr/bin/env bash
# Density (issue 16): what the storage driver does to an agent's memory. Most of an idle agent's
# PSS is its binary's pages (file-backed). Kernel overlayfs (`overlay2`) maps one page-cache copy
# of the image layer's file for every container; `fuse-overlayfs` presents each container's root
# through its own FUSE mount, so every container reads its own copy. This starts, one after the
# other, a private dockerd per driver (its own network namespace, data and exec root; the
# machine's daemon is only read from: `docker save` of the agent image), runs N agent containers
# on each (`--init`, no network: idle, as in the fleet), and prints the agent processes' and the
# shims' PSS per agent, side by side. Everything it creates is removed at the end, on error and
# on Ctrl-C (the daemons, their namespace, their directories).
# Usage: scripts/bench-storage-driver.sh [N=100] [IMAGE=zcaas/agent-runtime:e2e]
# Needs root, nsenter, ip, and the image on the machine's daemon (any test run builds it).
set -euo pipefail
N="${1:-100}"
IMAGE="${2:-zcaas/agent-runtime:e2e}"
RUN="zcsd$$"
ROOT="/var/lib/zcaas-bench-storage/$RUN"
NS="$RUN"
docker image inspect "$IMAGE" >/dev/null 2>&1 || { echo "no image $IMAGE on the machine's daemon" >&2; exit 1; }
mkdir -p "$ROOT"
ip netns add "$NS"
ip -n "$NS" link set lo up

PID=""
stop_daemon() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID"
    for _ in $(seq 1 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
  fi
  PID=""
}
cleanup() {
  set +e
  stop_daemon
  # A killed daemon's containerd and shims, and its mounts, deepest first.
  pkill -KILL -f "$ROOT" 2>/dev/null
  grep " $ROOT" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  rm -rf "$ROOT"
  rmdir /var/lib/zcaas-bench-storage 2>/dev/null
}
trap cleanup EXIT INT TERM

pss() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
field() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

for driver in overlay2 fuse-overlayfs; do
  dir="$ROOT/$driver"
  mkdir -p "$dir/data" "$dir/exec"
  echo '{}' > "$dir/daemon.json"
  sock="unix://$dir/d.sock"
  nsenter --net="/run/netns/$NS" dockerd --config-file "$dir/daemon.json" --data-root "$dir/data" \
    --exec-root "$dir/exec" --pidfile "$dir/d.pid" -H "$sock" --storage-driver="$driver" \
    --bridge=none --iptables=false --ip-masq=false >"$dir/dockerd.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 300); do docker -H "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
  docker -H "$sock" version >/dev/null || { tail -20 "$dir/dockerd.log" >&2; exit 1; }
  docker save "$IMAGE" | docker -H "$sock" load >/dev/null
  for i in $(seq 1 "$N"); do
    docker -H "$sock" run -d --init --network none --name "a$i" "$IMAGE" gateway >/dev/null
  done
  sleep 5
  agent=0; file=0; shim=0; procs=0
  for i in $(seq 1 "$N"); do
    init=$(docker -H "$sock" inspect -f '{{.State.Pid}}' "a$i")
    parent=$(awk '{print $4}' "/proc/$init/stat")
    shim=$((shim + $(pss "$parent")))
    for p in "$init" $(pgrep -P "$init"); do
      agent=$((agent + $(pss "$p"))); file=$((file + $(field "$p" Pss_File))); procs=$((procs + 1))
    done
  done
  printf '%-15s %d agents: agent processes (docker-init + runtime, %d procs) PSS %.2f MiB per agent (file-backed %.2f) | shim %.2f MiB | total %.2f MiB\n' \
    "$driver" "$N" "$procs" "$(echo "$agent/$N/1024" | bc -l)" "$(echo "$file/$N/1024" | bc -l)" \
    "$(echo "$shim/$N/1024" | bc -l)" "$(echo "($agent+$shim)/$N/1024" | bc -l)"
  docker -H "$sock" rm -f $(docker -H "$sock" ps -aq) >/dev/null
  stop_daemon
done
