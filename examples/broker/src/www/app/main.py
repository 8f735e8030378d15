"""broker-example management web app (stdlib stand-in for the Flask app).

Run from the www root as `python ./app/main.py`; listens on 0.0.0.0:5000,
or on the port in the PORT environment variable.
"""

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

APP_DIR = os.path.dirname(os.path.abspath(__file__))
STATIC = {"/static/style.css": ("style.css", "text/css; charset=utf-8")}


def render_index():
    with open(os.path.join(APP_DIR, "templates", "index.html"), encoding="utf-8") as f:
        return f.read().replace("{{ title }}", "broker-example mgmt-app")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server naming)
        if self.path == "/":
            self._reply(200, "text/html; charset=utf-8", render_index().encode())
        elif self.path in STATIC:
            name, ctype = STATIC[self.path]
            with open(os.path.join(APP_DIR, "static", name), "rb") as f:
                self._reply(200, ctype, f.read())
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found\n")

    def _reply(self, status, ctype, body):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    # As PID 1 of a container, SIGTERM without a handler is ignored and a
    # stop waits out the whole grace period.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    port = int(os.environ.get("PORT", "5000"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print(f"broker-example mgmt-app listening on port {port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
