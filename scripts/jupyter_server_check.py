#!/usr/bin/env python3
"""Runs a notebook the way a person does in JupyterLab: through a real Jupyter server.

    .venv/bin/python scripts/jupyter_server_check.py notebooks/va_attention.ipynb \
        [--expect table --expect figure --expect explorer] [--timeout S] [--dep-timeout S]

What it does, all on loopback (127.0.0.1, a free port, a random token):

1. starts `jupyter server` (the one JupyterLab runs on) from the repository root, with the
   project venv's kernelspecs (the `rust` evcxr kernel that scripts/setup-notebooks.sh installs);
2. opens the notebook through the REST API (`GET /api/contents/<path>`), starts a kernel for it as
   JupyterLab does (`POST /api/sessions`: the kernel's working directory is the notebook's folder);
3. runs every code cell over the kernel's websocket (`/api/kernels/<id>/channels`, Jupyter
   messaging protocol 5.3: `execute_request` on the shell channel, outputs on iopub);
4. fails on any cell error, on a panic printed to stderr (evcxr can report a panicking cell as ok),
   and unless the outputs contain what `--expect` names:
   * `table`: an HTML table (`<table`), as DataFrame displays render;
   * `figure`: a plotly figure (its MIME type or a `Plotly.newPlot` call in HTML);
   * `explorer`: the interactive trace explorer (its `class="ts-explorer"` element in HTML).

The server, the session and the kernel are shut down at the end, whatever happened. The last line
is `jupyter-server: N passed, M failed` (one check per cell plus one per `--expect`).
Exit status: 0 all passed, 1 a check failed, 2 set-up (no server, no kernelspec, bad notebook).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"

EXPECTATIONS = {
    "table": lambda mime, data: mime == "text/html" and "<table" in data,
    "figure": lambda mime, data: mime == "application/vnd.plotly.v1+json"
    or (mime == "text/html" and "Plotly.newPlot" in data),
    "explorer": lambda mime, data: mime == "text/html" and "class=\"ts-explorer\"" in data,
}


class SetupError(Exception):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `jupyter server` child process on loopback, and a small REST client for it."""

    def __init__(self, root: Path, startup_timeout: float):
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        # The project venv's kernelspecs first (the `rust` kernel lives there).
        env["JUPYTER_PATH"] = os.pathsep.join(
            p for p in [str(VENV / "share" / "jupyter"), env.get("JUPYTER_PATH", "")] if p
        )
        python = VENV / "bin" / "python"
        if not python.exists():
            raise SetupError(f"{python} is missing: run bash scripts/setup-notebooks.sh")
        self.log_path = REPO / "target" / "jupyter-server.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [
                str(python), "-m", "jupyter", "server",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={root}",
                "--ServerApp.allow_remote_access=False",
                "--allow-root",  # CI and containers run as root; the server listens on loopback only
            ],
            cwd=root,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise SetupError(f"jupyter server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                self.request("GET", "/api/status")
                return
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise SetupError(f"jupyter server did not answer in {startup_timeout:.0f} s; see {self.log_path}")
                time.sleep(0.3)

    def request(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read().decode()
            return json.loads(text) if text else None

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class KernelChannel:
    """The kernel's websocket: send `execute_request`, gather the outputs that answer it."""

    def __init__(self, server: Server, kernel_id: str, session_id: str):
        import websocket  # websocket-client, pinned in scripts/setup-notebooks.sh

        self.session = session_id
        url = (
            f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels"
            f"?session_id={session_id}&token={server.token}"
        )
        self.ws = websocket.create_connection(url, timeout=30)

    def execute(self, code: str, timeout: float) -> dict:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {
                "msg_id": msg_id,
                "username": "thoughtscope-check",
                "session": self.session,
                "msg_type": "execute_request",
                "version": "5.3",
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            "channel": "shell",
            "buffers": [],
        }))
        result = {"status": None, "outputs": [], "stderr": "", "stdout": "", "error": None}
        idle = False
        deadline = time.monotonic() + timeout
        while result["status"] is None or not idle:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no reply within {timeout:.0f} s")
            self.ws.settimeout(min(remaining, 30))
            try:
                raw = self.ws.recv()
            except Exception as e:  # websocket-client's timeout type varies by version
                if "timed out" in str(e).lower():
                    continue
                raise
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            content = msg.get("content", {})
            if kind == "execute_reply":
                result["status"] = content.get("status")
                if content.get("status") == "error":
                    result["error"] = f"{content.get('ename')}: {content.get('evalue')}"
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
            elif kind == "stream":
                result[content.get("name", "stdout")] += content.get("text", "")
            elif kind in ("display_data", "execute_result"):
                result["outputs"].append(content.get("data", {}))
            elif kind == "error":
                result["error"] = f"{content.get('ename')}: {content.get('evalue')}"
        return result

    def close(self):
        self.ws.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--expect", action="append", default=[], choices=sorted(EXPECTATIONS))
    parser.add_argument("--timeout", type=float, default=900, help="seconds per cell")
    parser.add_argument("--dep-timeout", type=float, default=3600, help="seconds for a cell with a `:dep` line")
    parser.add_argument("--startup-timeout", type=float, default=120)
    parser.add_argument("--kernel", default="rust", help="kernelspec name (default: rust, the evcxr kernel)")
    args = parser.parse_args()

    notebook = args.notebook.resolve()
    try:
        rel = notebook.relative_to(REPO)
    except ValueError:
        print(f"error: {args.notebook} is not inside {REPO}", file=sys.stderr)
        return 2
    if not notebook.is_file():
        print(f"error: {args.notebook}: no such notebook", file=sys.stderr)
        return 2

    passed, failed = 0, 0
    server = None
    session = None
    channel = None
    try:
        server = Server(REPO, args.startup_timeout)
        print(f"[jupyter-server] server on 127.0.0.1:{server.port} (log {server.log_path})", flush=True)
        specs = server.request("GET", "/api/kernelspecs")
        if args.kernel not in specs.get("kernelspecs", {}):
            raise SetupError(f"the server has no `{args.kernel}` kernelspec (has {sorted(specs.get('kernelspecs', {}))}); run bash scripts/setup-notebooks.sh")
        # The kernel's scratch crate, as the kernelspec sets it (scripts/setup-notebooks.sh).
        kernel_tmpdir = specs["kernelspecs"][args.kernel].get("spec", {}).get("env", {}).get("EVCXR_TMPDIR")
        model = server.request("GET", f"/api/contents/{rel.as_posix()}?content=1&type=notebook")
        cells = [c for c in model["content"]["cells"] if c["cell_type"] == "code"]
        session = server.request("POST", "/api/sessions", {
            "path": rel.as_posix(), "name": notebook.name, "type": "notebook", "kernel": {"name": args.kernel},
        })
        kernel_id = session["kernel"]["id"]
        print(f"[jupyter-server] {rel}: {len(cells)} code cells, kernel {kernel_id}", flush=True)
        channel = KernelChannel(server, kernel_id, session["id"])

        outputs = []
        for number, cell in enumerate(cells, 1):
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            if not source.strip():
                continue
            has_dep = any(l.lstrip().startswith(":dep") for l in source.splitlines())
            timeout = args.dep_timeout if has_dep else args.timeout
            if has_dep and kernel_tmpdir and (REPO / "Cargo.lock").is_file():
                # As scripts/run_notebook.py does: the CLI's lock file, so the kernel resolves the
                # versions the CLI built (evcxr prunes the scratch crate's lock before a `:dep`).
                Path(kernel_tmpdir).mkdir(parents=True, exist_ok=True)
                (Path(kernel_tmpdir) / "Cargo.lock").write_bytes((REPO / "Cargo.lock").read_bytes())
            first = next((l.strip() for l in source.splitlines() if l.strip()), "")[:80]
            start = time.monotonic()
            try:
                result = channel.execute(source, timeout)
            except TimeoutError as e:
                print(f"FAIL code cell {number} `{first}`: {e}", flush=True)
                failed += 1
                break
            took = time.monotonic() - start
            problem = result["error"] or ("a panic on stderr" if "panicked at" in result["stderr"] else None)
            if result["status"] != "ok" and not problem:
                problem = f"status {result['status']}"
            if problem:
                print(f"FAIL code cell {number} `{first}` ({took:.1f} s): {problem}\n{result['stderr'][-2000:]}", flush=True)
                failed += 1
                break  # later cells depend on this one, as in JupyterLab's "run all"
            print(f"ok   code cell {number} `{first}` ({took:.1f} s, {len(result['outputs'])} outputs)", flush=True)
            passed += 1
            outputs.extend(result["outputs"])

        for name in args.expect:
            check = EXPECTATIONS[name]
            if any(check(mime, data if isinstance(data, str) else json.dumps(data)) for bundle in outputs for mime, data in bundle.items()):
                print(f"ok   among the outputs: {name}", flush=True)
                passed += 1
            else:
                print(f"FAIL among the outputs ({len(outputs)} display bundles): no {name}", flush=True)
                failed += 1
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if channel is not None:
            channel.close()
        if server is not None:
            if session is not None:
                try:
                    server.request("DELETE", f"/api/sessions/{session['id']}")
                except Exception as e:  # the server stops next anyway
                    print(f"note: closing the session: {e}", file=sys.stderr)
            server.stop()

    print(f"jupyter-server: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
