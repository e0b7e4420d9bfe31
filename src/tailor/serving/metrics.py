"""Prometheus metrics of one server, in their own registry (so several apps can live in one process)."""

from __future__ import annotations

from dataclasses import dataclass

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass
class Metrics:
    registry: object
    requests: object
    latency: object
    ttft: object
    generated: object
    prompt_tokens: object
    queue_depth: object
    active: object
    batch_size: object
    rejected: object
    model_version: object
    reloads: object
    reload_failures: object

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type, for GET /metrics."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def new_metrics() -> Metrics:
    """Counters, gauges and histograms the engine and the routes update."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    r = CollectorRegistry()
    failures = Counter("tailor_model_reload_failures", "Registry versions that failed to load (reason=load) and "
                       "registry reads that failed (reason=registry)", ["reason"], registry=r)
    for reason in ("load", "registry"):
        failures.labels(reason)  # exported as 0 from the start, so rate() and alerts see the series
    return Metrics(
        registry=r,
        requests=Counter("tailor_requests", "HTTP requests by route and status code", ["route", "status"], registry=r),
        latency=Histogram("tailor_request_latency_seconds", "Time from request to last byte, by route", ["route"],
                          buckets=_LATENCY_BUCKETS, registry=r),
        ttft=Histogram("tailor_time_to_first_token_seconds", "Time from admission to the first generated token",
                       buckets=_LATENCY_BUCKETS, registry=r),
        generated=Counter("tailor_generated_tokens", "Tokens generated", registry=r),
        prompt_tokens=Counter("tailor_prompt_tokens", "Prompt tokens processed", registry=r),
        queue_depth=Gauge("tailor_queue_depth", "Sequences waiting for a batch slot", registry=r),
        active=Gauge("tailor_active_sequences", "Sequences holding a batch slot", registry=r),
        batch_size=Histogram("tailor_batch_size", "Rows per decode forward pass",
                             buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r),
        rejected=Counter("tailor_rejected", "Requests refused with 429 because the queue was full", registry=r),
        model_version=Gauge("tailor_model_version", "Registry version being served (serve --registry)", ["model"],
                            registry=r),
        reloads=Counter("tailor_model_reloads", "Switches to a newly promoted registry version", registry=r),
        reload_failures=failures,
    )
