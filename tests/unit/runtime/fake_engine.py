"""A tiny stand-in engine for the runtime tests (stdlib only, so it starts in ~50 ms).

Serves ``GET /health`` (200 once ready, 503 before) and ``GET /v1/models``. Flags:
``--ready-after S`` (default 0), ``--never-ready``, ``--crash-after S`` with ``--exit-code N``,
``--ignore-term`` (survive SIGTERM), ``--print-env`` (print environment variable names, and the
value of FAKE_ENGINE_ECHO only).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ready-after", type=float, default=0.0)
    parser.add_argument("--never-ready", action="store_true")
    parser.add_argument("--crash-after", type=float, default=None)
    parser.add_argument("--exit-code", type=int, default=3)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--print-env", action="store_true")
    args = parser.parse_args()

    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.print_env:
        print("env-names:", " ".join(sorted(os.environ)))
        print("echo:", os.environ.get("FAKE_ENGINE_ECHO", ""))
    print(f"fake-engine stdout: listening on {args.port}", flush=True)
    print("fake-engine stderr: hello", file=sys.stderr, flush=True)

    ready_at = time.monotonic() + args.ready_after

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/health":
                ok = not args.never_ready and time.monotonic() >= ready_at
                self._send(200 if ok else 503, b"")
            elif self.path == "/v1/models":
                self._send(200, json.dumps({"object": "list", "data": []}).encode())
            else:
                self._send(404, b"")

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    if args.crash_after is not None:
        threading.Timer(args.crash_after, os._exit, (args.exit_code,)).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
