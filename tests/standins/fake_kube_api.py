"""A stand-in Kubernetes API server for the kubernetes provider's tests.

No Kubernetes control plane can be installed on the test machine (no kube-apiserver in
Debian 12 or in the registries' ordinary packages, and no container image can be
pulled), so this small HTTP server answers the few REST calls the official Python
client makes for pxpool, in the API's own JSON: pods, Secrets and batch/v1 Jobs in
namespaces, with ``labelSelector``, 404/409/403/422 ``Status`` objects and pod logs.

It behaves as a one-node cluster would, as far as pxpool can tell:

- every object it is given is validated against the official OpenAPI schema
  (``kubernetes-validate``, strict) and refused with 422 when it does not fit;
- an Indexed Job gets one pod per completion index (``job-name`` and index labels,
  ``JOB_COMPLETION_INDEX``); each pod runs its container's command as a local
  process in its own directory: Secret volumes are written there as files (a
  "mount"), and the container's paths under the mount and under ``/tmp`` are
  rewritten to that directory;
- the "scheduler" places a pod only if the node has room for its requests, matches
  its ``nodeSelector`` and it tolerates the node's taints; else the pod stays
  Pending with ``Unschedulable`` and a message worded as kube-scheduler words it;
- images named by ``POST /standin/image-fault`` fail with ``ErrImagePull`` then
  ``ImagePullBackOff`` (or any waiting reason, e.g. ``CreateContainerConfigError``);
- ``POST /standin/forbid`` makes a verb on a resource answer 403 as RBAC does;
- ``POST /standin/oom`` kills a pod's processes as the OOM killer does and reports
  ``OOMKilled``; a failed pod fails its Job (``backoffLimit``) and the other pods go;
- ``activeDeadlineSeconds`` fails a Job with ``DeadlineExceeded``; deleting a Job
  sends its pods SIGTERM, then SIGKILL after ``terminationGracePeriodSeconds``;
- ``/standin/requests`` lists every request it got (method, path, query, body), or
  those of one method (``POST {"method": "POST"}``); ``/standin/objects`` what it holds.

Run: ``python fake_kube_api.py STATE_DIR``; it writes ``STATE_DIR/port`` once it
listens on 127.0.0.1, and on SIGTERM kills every pod and removes their files.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from fake_kube_objects import Cluster, status

ROUTE = re.compile(
    r"^/(?:api/v1|apis/batch/v1)/namespaces/(?P<ns>[^/]+)/(?P<kind>pods|secrets|jobs)"
    r"(?:/(?P<name>[^/]+))?(?P<log>/log)?$"
)


class Handler(BaseHTTPRequestHandler):
    cluster: Cluster

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null") if length else None

    def _send(self, code: int, payload: Any, text: bool = False) -> None:
        data = payload.encode() if text else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self._body() if method in ("POST", "PUT", "DELETE") else None
        self.cluster.record(method, url.path, query, body)
        if url.path.startswith("/standin/"):
            code, payload = self.cluster.control(url.path.removeprefix("/standin/"), body)
            return self._send(code, payload)
        match = ROUTE.match(url.path)
        if match is None:
            return self._send(404, status(404, "NotFound", f"the server could not find {url.path}"))
        try:
            code, payload = self.cluster.answer(method, match.groupdict(), query, body)
        except Exception as exc:  # a stand-in bug: say so, as an API server's 500
            code, payload = 500, status(500, "InternalError", f"stand-in: {exc!r}")
        self._send(code, payload, text=isinstance(payload, str))

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


def main(state_dir: str) -> None:
    root = Path(state_dir)
    root.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(root)
    Handler.cluster = cluster
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True

    def shut_down(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    ticker = threading.Thread(target=cluster.run_controllers, daemon=True)
    ticker.start()
    (root / "port.partial").write_text(str(server.server_address[1]))
    os.replace(root / "port.partial", root / "port")
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        cluster.close()


if __name__ == "__main__":
    main(sys.argv[1])
