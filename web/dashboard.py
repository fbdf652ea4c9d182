"""The dashboard page and its assets (the Socket.IO client is the official npm build, served locally)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, abort, render_template, send_from_directory

blueprint = Blueprint("dashboard", __name__, template_folder="templates")

NODE_MODULES = Path(__file__).resolve().parent.parent / "node_modules"
SOCKET_IO_CLIENT = NODE_MODULES / "socket.io-client" / "dist"


@blueprint.get("/")
def index() -> Any:
    """The camera wall."""
    return render_template("index.html")


@blueprint.get("/static/vendor/socket.io.min.js")
def socket_io_client() -> Any:
    """The official socket.io-client bundle from node_modules (installed by scripts/bootstrap.sh)."""
    if not (SOCKET_IO_CLIENT / "socket.io.min.js").is_file():
        abort(404, "socket.io-client is not installed: run scripts/bootstrap.sh (npm ci)")
    return send_from_directory(SOCKET_IO_CLIENT, "socket.io.min.js", mimetype="text/javascript")
