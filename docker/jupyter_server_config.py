"""JupyterLab settings of the workstation image (installed as /etc/jupyter/jupyter_server_config.py).

Security: a token is always required. It comes from ``JUPYTER_TOKEN``; when that is unset or empty a
random one is generated, and Jupyter prints the login URL with it (``docker logs CONTAINER``).
"""

import os
import sys

c = get_config()  # noqa: F821 -- injected by Jupyter when it loads this file

c.ServerApp.ip = os.environ.get("JUPYTER_IP", "0.0.0.0")
c.ServerApp.port = int(os.environ.get("JUPYTER_PORT", "8888"))
c.ServerApp.port_retries = 0  # the port is published by `docker run -p`: never drift to another one
c.ServerApp.open_browser = False
c.ServerApp.allow_remote_access = True  # requests come through Docker's port mapping, not from localhost
c.ServerApp.root_dir = os.environ.get("DENOISE_WORKSPACE", "/workspace")
c.ServerApp.terminado_settings = {"shell_command": ["/bin/bash"]}  # reads /etc/bash.bashrc: env active

if os.environ.get("JUPYTER_TOKEN", "").strip():
    c.IdentityProvider.token = os.environ["JUPYTER_TOKEN"].strip()
else:
    # Unset (or blank, which would otherwise be taken as the token itself): Jupyter then generates a
    # random token and prints the full login URL with it; it never serves without one.
    os.environ.pop("JUPYTER_TOKEN", None)
    print(
        "[denoise] JUPYTER_TOKEN is not set: Jupyter generates a token (see the URL below)", file=sys.stderr
    )
