"""`docker run IMAGE serve`: check the model folder, then run gunicorn in this process.

gunicorn's master stays PID 1 (the image's ENTRYPOINT execs this module), so SageMaker's SIGTERM
reaches it: workers finish the request in hand and exit. Each worker loads the model itself and
makes a warm-up prediction before it accepts a connection, so /ping answers 200 only from a
worker that can predict; the request timeout does not bound the load (gunicorn times a worker
from its first heartbeat, after the load). A model that fails to load, and a worker that dies
while it loads (a signal: the memory limit, a crash in a native library), stop the container
with the reason logged, instead of a loop of workers that die alike.
Workers drop root to BYOC_SERVER_USER; the master keeps root, as SageMaker starts containers.

    python -m serve.server serve       (BYOC_MODEL_DIR=... to serve a folder outside Docker)
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import pwd
import shutil
import sys
import tempfile
from pathlib import Path

from gunicorn.app.base import BaseApplication
from gunicorn.errors import HaltServer

from artifact.manifest import ArtifactError, read_manifest
from serve.cores import CORES
from serve.predictor import choose_backend
from serve.settings import Settings, SettingsError, visible_gpus

log = logging.getLogger("serve")
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# Per worker (its age, modulo the cells): 1 once its model is loaded. Made before the fork, so
# the master reads what the workers write.
LOADED = multiprocessing.Array("b", 64)
this_worker = None  # in a worker process: gunicorn's Worker, set by post_fork


class Server(BaseApplication):
    def __init__(self, settings: Settings, options: dict):
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):  # runs in each worker, after the fork and the drop of privileges
        app = self.load_app()
        if this_worker is not None:
            LOADED[this_worker.age % len(LOADED)] = 1
        return app

    def load_app(self):
        from serve.app import create_app
        from serve.predictor import load_predictor

        s = self.settings
        CORES.configure(s.parallel_requests)
        if s.multi_model:  # models come and go through the /models API; threads share them
            from serve.models import ModelStore, estimated_memory

            store = ModelStore(s.model_memory_bytes,
                               lambda path: load_predictor(path, s.backend, s.intra_op_threads,
                                                          s.max_pixels, **predictor_options(s)),
                               s.models_root,
                               lambda path: estimated_memory(path, s.backend, s.precision,
                                                             s.intra_op_threads))
            return create_app(s, store=store)
        try:
            predictor = load_predictor(s.model_dir, s.backend, s.intra_op_threads, s.max_pixels,
                                       **predictor_options(s))
        except Exception:
            log.exception("the model in %s could not be loaded; the server stops", s.model_dir)
            raise
        return create_app(s, predictor=predictor)


def predictor_options(settings: Settings) -> dict:
    return {"precision": settings.precision, "batch_images": settings.dynamic_batch or None,
            "batch_wait_s": settings.dynamic_batch_wait_s}


def worker_user(name: str) -> dict:
    """gunicorn's user/group for the workers: drop root when the image has that user."""
    if os.geteuid() != 0 or name == "root":
        return {}
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        log.warning("no user %r here: workers keep running as root", name)
        return {}
    return {"user": entry.pw_uid, "group": entry.pw_gid}


def post_fork(gpus: list[str]):
    """In each new worker, before it loads anything: its cell of the machine's count of requests
    (serve/cores.py), and on GPUs one GPU, in turn (before it initialises CUDA)."""
    def hook(server, worker):
        global this_worker
        this_worker = worker
        LOADED[worker.age % len(LOADED)] = 0
        CORES.use_cell(worker.age)
        if gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpus[(worker.age - 1) % len(gpus)]
    return hook


def child_exit(server, worker):
    """In the master: the requests of a worker that died no longer count as in flight, and its
    live gauges no longer count in /metrics. A worker that died before its model was loaded
    stops the server (gunicorn would start another, to die alike, and /ping never answer);
    not while the server stops, when it closed its sockets and stops the workers itself."""
    CORES.clear(worker.age)
    if os.environ.get(METRICS_DIR):
        from serve import metrics  # prometheus-client's mode is set by now (metrics_folder)

        metrics.worker_exited(worker.pid)
    if server.LISTENERS and not LOADED[worker.age % len(LOADED)]:
        raise HaltServer(f"worker {worker.pid} died while it loaded the model (its signal is "
                         "logged above: SIGKILL is most often the memory limit); starting "
                         "another would only repeat it, so the server stops", 1)


def metrics_folder() -> None:
    """A fresh PROMETHEUS_MULTIPROC_DIR for this server's workers, set before gunicorn forks them
    and before anything here imports prometheus-client (serve/metrics.py says why)."""
    folder = Path(os.environ.get(METRICS_DIR) or tempfile.gettempdir()) / "byoc-metrics"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    folder.chmod(0o1777)  # the workers may run as another user
    os.environ[METRICS_DIR] = str(folder)


def gunicorn_options(settings: Settings, gpus: list[str] | None = None) -> dict:
    return {
        "bind": f"0.0.0.0:{settings.port}",
        "workers": settings.workers,
        # serve/settings.py says why these; a sync worker accepts a connection only when idle,
        # which spreads requests evenly when each worker serves one at a time.
        "worker_class": "gthread" if settings.request_threads > 1 else "sync",
        "threads": settings.request_threads,
        "timeout": settings.timeout_s,
        "graceful_timeout": 20,  # SageMaker sends SIGKILL 30 s after SIGTERM
        "keepalive": 5,
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        "control_socket_disable": True,
        "accesslog": "-",
        "access_log_format": '%(h)s "%(r)s" %(s)s %(b)s %(M)sms',
        "errorlog": "-",
        "loglevel": "info",
        **worker_user(settings.user),
        "post_fork": post_fork(gpus or []),
        "child_exit": child_exit,
    }


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s "
                        "%(name)s: %(message)s", stream=sys.stderr)
    if argv and argv[0] != "serve":
        print(f"this is the serving image: run it with `serve`, not {' '.join(argv)!r}",
              file=sys.stderr)
        return 2
    try:
        settings = Settings.from_environment()
        metrics_folder()
        if settings.multi_model:
            log.info("multi-model endpoint: models load on POST /models; %s, a memory budget of "
                     "%.0f MiB, port %d", settings.layout(), settings.model_memory_bytes / 2**20,
                     settings.port)
            Server(settings, gunicorn_options(settings)).run()
            return 0
        # Cheap checks here, so a wrong folder fails with one clear line instead of per worker.
        manifest = read_manifest(settings.model_dir)
        backend = choose_backend(settings.model_dir, settings.backend)
        gpus = visible_gpus() if backend == "torch" else []
        if gpus:
            settings = Settings.from_environment(gpus=len(gpus))
    except (SettingsError, ArtifactError) as e:
        log.error("cannot serve: %s", e)
        return 1
    log.info("serving %s (%d classes) from %s with %s: %s%s on port %d", manifest.name,
             manifest.num_classes, settings.model_dir, backend, settings.layout(),
             f", GPUs {','.join(gpus)}" if gpus else "", settings.port)
    Server(settings, gunicorn_options(settings, gpus)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
