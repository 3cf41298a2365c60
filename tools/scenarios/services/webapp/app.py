"""A tiny notes service with a command-injection flaw, the scenarios' target.

/lookup?name=N resolves a host name by running `getent hosts N` through a
shell, unquoted: `name=x;id` runs id as the service's user.
"""
import http.server
import os
import subprocess
import urllib.parse

WORK = os.environ["SCN_WORK"]
NOTES = os.path.join(WORK, "notes.txt")


class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/":
            self.reply(200, "notes service\n")
        elif url.path == "/lookup":
            name = query.get("name", [""])[0]
            out = subprocess.run("getent hosts " + name, shell=True, capture_output=True, text=True, timeout=60)
            self.reply(200, out.stdout + out.stderr)
        elif url.path == "/notes":
            with open(NOTES) as f:
                self.reply(200, f.read()[-4096:])
        else:
            self.reply(404, "not found\n")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(min(n, 4096)).decode(errors="replace")
        with open(NOTES, "a") as f:
            f.write(body + "\n")
        self.reply(201, "saved\n")

    def log_message(self, *args):
        pass


with open(NOTES, "a") as f:
    f.write("first note\n")
http.server.ThreadingHTTPServer((os.environ["SCN_IP"], 8080), Handler).serve_forever()
