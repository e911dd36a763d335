#!/usr/bin/env bash
# User-space instructions per cache hit, counted by `valgrind --tool=callgrind`: deterministic,
# unlike CPU time on a shared VM, so a change to the hit path can be judged by itself. The release
# binary runs under callgrind twice, in front of a fixed-answer memU stand-in (Python, on
# loopback), answering one miss and then N identical hits on one keep-alive connection; the
# difference of the two totals over the difference of the hit counts is one hit's instructions
# (start-up, the miss and shutdown cancel out). SHA-256 runs in software under valgrind, so the
# tenant digest counts ~3.5k instructions more than it costs on a CPU with SHA-NI.
# The per-request log line is off (as in the loopback bench); at the default INFO level it adds
# its formatting and a write(2) to every hit.
# Usage: scripts/hit-instructions.sh        (needs valgrind: apt-get install valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --quiet
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# The stand-in memU: every POST gets the same retrieval answer; prints its port.
python3 - "$work/upstream.port" <<'EOF' &
import http.server, sys
ANSWER = b'{"related_memories":[{"memory":{"memory_id":"m1","category":"activity","content":"Alice loves her black cat named Mochi.","happened_at":"2026-11-24T00:00:00","created_at":null,"updated_at":null},"similarity_score":0.63}],"query":"What pets do I like?","total_found":1,"search_params":{"query":"What pets do I like?","top_k":3,"min_similarity":0.3,"include_categories":null}}'
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
open(sys.argv[1], "w").write(str(server.server_address[1]))
server.serve_forever()
EOF
for _ in $(seq 100); do [[ -s $work/upstream.port ]] && break; sleep 0.1; done
upstream=$(cat "$work/upstream.port")

# Total instructions of one proxy run answering `$1` hits (after one miss).
instructions() {
  local out=$work/callgrind.$1 log=$work/proxy.$1.log port=""
  RUST_LOG=warn,memu_proxy=info,memu_proxy::stack=warn valgrind --tool=callgrind --callgrind-out-file="$out" \
    target/release/memu-proxy --listen 127.0.0.1:0 --upstream "http://127.0.0.1:$upstream" \
    >"$log" 2>&1 &
  local proxy=$!
  for _ in $(seq 300); do
    port=$(sed -n 's/.*memu-proxy listening.*listen=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
    [[ -n $port ]] && break
    sleep 0.1
  done
  [[ -n $port ]] || { cat "$log" >&2; echo "the proxy did not start" >&2; exit 1; }
  python3 - "$port" "$1" <<'EOF'
import socket, sys
port, hits = int(sys.argv[1]), int(sys.argv[2])
body = b'{"user_id": "u1", "agent_id": "a1", "query": "What pets do I like?", "top_k": 3}'
request = (b"POST /api/v1/memory/retrieve/related-memory-items HTTP/1.1\r\nHost: proxy\r\n"
           b"Content-Type: application/json\r\nAuthorization: Bearer key\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body
connection = socket.create_connection(("127.0.0.1", port))
connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
answered = 0
for i in range(hits + 1):
    connection.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, rest = data.split(b"\r\n\r\n", 1)
    length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
    while len(rest) < length:
        rest += connection.recv(65536)
    answered += i > 0 and b"cache-status: memu-proxy; hit" in head.lower()
if answered != hits:
    sys.exit(f"only {answered} of {hits} repeats were cache hits")
EOF
  kill -INT "$proxy"
  wait "$proxy" || true
  callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}'
}

few=200 many=2200
a=$(instructions $few)
b=$(instructions $many)
echo "user-space instructions per cache hit: $(( (b - a) / (many - few) ))"
