"""Prometheus metrics, answered at GET /metrics in Prometheus' text format.

Counted across gunicorn's worker processes: serve/server.py points PROMETHEUS_MULTIPROC_DIR at a
fresh folder before the workers fork, each process writes its samples into files of its own
there (prometheus-client's multiprocess mode), /metrics adds them up, and the master marks a
dead worker's gauges dead. prometheus-client picks its mode when it is imported, so only the
workers import this module (serve/app.py), never the master before it set the folder. Without
that variable (a Flask test client, a notebook), the process' own registry answers.

    byoc_requests_total{route, method, status}      every request, by route rule (bounded)
    byoc_request_seconds{route}                     time from routing to the response
    byoc_decode_seconds                             decoding and preprocessing, per image
    byoc_inference_seconds{precision}               the network, per batch
    byoc_batch_images                               images per network run
    byoc_model_info{model, version, ...}            1 for each model served
    byoc_requests_in_flight                         requests holding or waiting for a core,
                                                    in every worker, at the scrape
"""
from __future__ import annotations

import os
import time

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge,
                               Histogram, generate_latest, multiprocess)
from prometheus_client.core import GaugeMetricFamily

from serve.cores import CORES

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# From a cached decode to a busy CPU's network run: 1 ms to 10 s.
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("byoc_requests", "Requests by route, method and status",
                   ["route", "method", "status"])
REQUEST_SECONDS = Histogram("byoc_request_seconds", "Time from routing to the response",
                            ["route"], buckets=SECONDS)
DECODE_SECONDS = Histogram("byoc_decode_seconds", "Decoding and preprocessing of one image",
                           buckets=SECONDS)
INFERENCE_SECONDS = Histogram("byoc_inference_seconds", "One network run over a batch",
                              ["precision"], buckets=SECONDS)
BATCH_IMAGES = Histogram("byoc_batch_images", "Images per network run",
                         buckets=(1, 2, 4, 8, 16, 32, 64))
MODEL_INFO = Gauge("byoc_model_info", "1 for each model this server serves",
                   ["model", "version", "architecture", "backend", "precision"],
                   multiprocess_mode="max")


class InFlight:
    """The requests that hold or wait for a core, read when scraped: serve/cores.py counts them
    in memory that every worker shares, so any worker's scrape sees them all."""

    def collect(self):
        yield GaugeMetricFamily("byoc_requests_in_flight",
                                "Requests holding or waiting for a core, in every worker",
                                value=CORES.in_flight())


REGISTRY.register(InFlight())


def decoded(seconds: float) -> None:
    DECODE_SECONDS.observe(seconds)


def inferred(seconds: float, images: int, precision: str) -> None:
    INFERENCE_SECONDS.labels(precision).observe(seconds)
    BATCH_IMAGES.observe(images)


def model_served(info: dict, served: bool = True) -> None:
    MODEL_INFO.labels(info["name"], info["version"], info["architecture"], info["backend"],
                      info["precision"]).set(1 if served else 0)


def observe_request(route: str, method: str, status: int, started: float) -> None:
    REQUESTS.labels(route, method, str(status)).inc()
    REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)


def exposition() -> tuple[bytes, str]:
    """The text a scrape gets, and its content type."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(InFlight())
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """In the master, when a worker exits: its live gauges no longer count."""
    if os.environ.get(MULTIPROCESS_DIR):
        multiprocess.mark_process_dead(pid)
