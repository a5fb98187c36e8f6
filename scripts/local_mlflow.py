"""An MLflow tracking server on this machine, as a team runs its own: a SQLite store and
artifacts in a folder, sent through the server (clients need no access to the folder).

    python -m scripts.local_mlflow --folder local_run/mlflow [--port 5000] [--host 127.0.0.1]

Then give the training jobs MLFLOW_TRACKING_URI=http://HOST:PORT (a job in a container reaches
this machine at Docker's bridge address: `--host 0.0.0.0`, or that address) and open the URL in
a browser. Ctrl-C or SIGTERM stops it. scripts/run_local_flow.sh, the tests and bench/tracking.py
start it the same way.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from scripts.local_endpoint import free_port, wait_for_http


def start(folder: Path, host: str = "127.0.0.1", port: int | None = None, quiet: bool = True,
          served_artifacts: bool = True) -> tuple[subprocess.Popen, str]:
    """`mlflow server` in its own process group, once /health answers: (process, its URL).
    served_artifacts=False: clients write the artifacts to the folder themselves, as they write
    to the S3 bucket of a SageMaker MLflow App."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or shutil.which("mlflow")
    if mlflow is None:
        raise SystemExit("no `mlflow` command: pip install mlflow (requirements/launch.txt has it)")
    output = subprocess.DEVNULL if quiet else None
    process = subprocess.Popen(
        [mlflow, "server", "--host", host, "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder.resolve()}/mlflow.db",
         *(["--artifacts-destination", str(folder.resolve() / "artifacts")] if served_artifacts
           else ["--no-serve-artifacts", "--default-artifact-root",
                 (folder.resolve() / "artifacts").as_uri()])],
        stdout=output, stderr=output, start_new_session=True,
        # Its job runner (four huey consumers, 300 MB each) runs GenAI scorers, none of the kit's.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://{host}:{port}"
    try:
        wait_for_http(f"{url}/health", 120,
                      stopped=lambda: None if process.poll() is None else "mlflow server exited")
    except BaseException:
        stop(process)
        raise
    return process, url


def bridge_gateway() -> str:
    """This machine's address on Docker's default network: where a container reaches a server
    that listens on it (Linux; Docker Desktop has host.docker.internal instead). A daemon that
    chose the network itself may list only its subnet: the gateway is then its first address."""
    config = json.loads(subprocess.run(
        ["docker", "network", "inspect", "bridge", "-f", "{{json (index .IPAM.Config 0)}}"],
        capture_output=True, text=True, check=True).stdout)
    return config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


def stop(process: subprocess.Popen) -> None:
    """The server and its workers (its process group)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("local_run/mlflow"),
                        help="the store and the artifacts")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    process, url = start(args.folder, args.host, args.port, quiet=False)
    print(f"MLflow at {url} (store and artifacts in {args.folder}); Ctrl-C stops it. Its UI "
          "opens in the GenAI view: \"Model training\" at its top left shows the runs", flush=True)
    # The server runs in its own process group: stop it however this process is asked to end.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop(process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
