#!/usr/bin/env python
"""Docker HEALTHCHECK of the workstation image: is JupyterLab answering its authenticated API?

Jupyter writes one ``jpserver-PID.json`` per running server into ``$JUPYTER_RUNTIME_DIR`` with its URL
and token (generated or from JUPYTER_TOKEN). The check asks ``/api/status`` with that token and
exits 0 only on HTTP 200 with a JSON body, so it also fails when the token setup is broken.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path


def main() -> int:
    runtime = Path(os.environ.get("JUPYTER_RUNTIME_DIR", "/tmp/jupyter-runtime"))
    servers = sorted(runtime.glob("jpserver-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not servers:
        print(f"unhealthy: no Jupyter server registered in {runtime}", file=sys.stderr)
        return 1
    info = json.loads(servers[0].read_text(encoding="utf-8"))
    host = "127.0.0.1" if info.get("hostname") in ("0.0.0.0", "", None) else info["hostname"]
    url = f"http://{host}:{info['port']}{info.get('base_url', '/')}api/status"
    request = urllib.request.Request(url, headers={"Authorization": f"token {info.get('token', '')}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            json.load(response)
            status = response.status
    except Exception as exc:  # any failure is "unhealthy"; say which
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    print(f"healthy: {url} -> {status}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
