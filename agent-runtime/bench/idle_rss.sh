#!/usr/bin/env bash
# Idle memory of a running agent-runtime container.
# Usage: agent-runtime/bench/idle_rss.sh [IMAGE]   (default zcaas/agent-runtime:latest)
# Prints, (1) 5 s after start with no traffic and (2) 15 s after 50 webhook round trips to a
# local instant provider: the process's VmRSS / RssAnon / RssFile (from /proc/<pid>/status on
# the host) and the cgroup figure of `docker stats` (usage minus page cache).
set -euo pipefail
IMAGE="${1:-zcaas/agent-runtime:latest}"
STUB_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("",0)); print(s.getsockname()[1])')"
HOST_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

python3 - "$STUB_PORT" <<'PY' &
import json, sys, http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        b = json.dumps({"choices": [{"message": {"role": "assistant", "content": "pong"}}]}).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
PY
STUB_PID=$!
CID=""
cleanup() { [ -n "$CID" ] && docker rm -f "$CID" >/dev/null; kill "$STUB_PID" 2>/dev/null || true; }
trap cleanup EXIT

CID=$(docker run -d --label io.zcaas.managed=true -p "127.0.0.1:$HOST_PORT:42617" \
    --add-host=host.docker.internal:host-gateway \
    -e "ZEROCLAW_PROVIDER=custom:http://host.docker.internal:$STUB_PORT/v1" -e API_KEY=sk-bench \
    "$IMAGE" gateway)
report() {
    local pid; pid=$(docker inspect -f '{{.State.Pid}}' "$CID")
    echo "$1: $(grep -E '^(VmRSS|RssAnon|RssFile)' "/proc/$pid/status" | tr -s ' \t' ' ' | tr '\n' ' ')| docker stats: $(docker stats --no-stream --format '{{.MemUsage}}' "$CID")"
}
sleep 5
report "idle 5 s after start"
CODE=$(docker logs "$CID" 2>/dev/null | grep -o 'X-Pairing-Code: [0-9]*' | tail -1 | awk '{print $2}')
TOKEN=$(curl -s -X POST -H "X-Pairing-Code: $CODE" "127.0.0.1:$HOST_PORT/pair" | jq -r .token)
for _ in $(seq 50); do
    curl -s -o /dev/null -X POST -H "Authorization: Bearer $TOKEN" -d '{"message":"ping"}' "127.0.0.1:$HOST_PORT/webhook"
done
sleep 15
report "idle 15 s after 50 webhooks"
