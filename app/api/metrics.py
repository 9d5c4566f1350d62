"""A small Prometheus registry (counters, gauges, histograms with labels) and its text format.

Hand-written rather than ``prometheus_client`` to keep dependencies down and because each app
needs its own registry (tests run several apps in one process; the client library's default
registry is global). Usage::

    metrics = app.state.metrics                      # one Registry per app
    tasks = metrics.counter("dwasm_tasks_completed_total", "Tasks completed.", ["queue"])
    tasks.inc(queue="images")
    metrics.gauge("dwasm_flows_in_memory", "Flows loaded.").set(3)
    metrics.gauge_callback("dwasm_db_pool_connections", "Pool connections.", ["state"],
                           lambda: [({"state": "idle"}, 2.0), ({"state": "busy"}, 1.0)])
    metrics.histogram("dwasm_checkpoint_bytes", "Bytes per checkpoint.",
                      buckets=[1e3, 1e4, 1e5, 1e6]).observe(4096)

``counter``/``gauge``/``histogram`` return the existing metric when called again with the same
name (and raise if its kind or labels differ), so code can look metrics up where it uses them.
All methods are thread-safe. :meth:`Registry.render` produces text format 0.0.4.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Default histogram buckets, in seconds: suited to HTTP request latencies.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

LabelValues = tuple[str, ...]
Sample = tuple[dict[str, str], float]


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, object]) -> LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {list(self.labelnames)}, "
                             f"got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def _header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A value that only goes up (requests served, tasks completed)."""

    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        if amount < 0:
            raise ValueError("a counter cannot decrease")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: object) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.labelnames:
            items = [((), 0.0)]
        return self._header() + [f"{self.name}{_labels(self.labelnames, k)} {_format_value(v)}"
                                 for k, v in items]


class Gauge(_Metric):
    """A value that goes up and down (flows in memory, leased tasks)."""

    kind = "gauge"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (),
                 callback: Callable[[], Iterable[Sample]] | None = None) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[LabelValues, float] = {}
        self._callback = callback

    def set(self, value: float, **labels: object) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: object) -> None:
        self.inc(-amount, **labels)

    def value(self, **labels: object) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            values = dict(self._values)
        if self._callback is not None:
            try:
                samples = list(self._callback())
            except Exception:  # a broken callback must not break /metrics
                samples = []
            for labels, value in samples:
                values[self._key(labels)] = float(value)
        return self._header() + [f"{self.name}{_labels(self.labelnames, k)} {_format_value(v)}"
                                 for k, v in sorted(values.items())]


class Histogram(_Metric):
    """Observations counted into cumulative buckets (latencies, sizes)."""

    kind = "histogram"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        super().__init__(name, help, labelnames)
        if "le" in self.labelnames:
            raise ValueError("'le' is reserved for histogram buckets")
        self.buckets = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))
        self._series: dict[LabelValues, list[float]] = {}  # bucket counts..., sum, count

    def observe(self, value: float, **labels: object) -> None:
        key = self._key(labels)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = [0.0] * (len(self.buckets) + 2)
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1
                    break
            series[-2] += value
            series[-1] += 1

    def render(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        lines = self._header()
        for key, series in items:
            cumulative = 0.0
            for bound, count in zip(self.buckets, series):
                cumulative += count
                le = f'le="{bound!r}"'
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} "
                             f"{_format_value(cumulative)}")
            inf = 'le="+Inf"'
            lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, inf)} "
                         f"{_format_value(series[-1])}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} "
                         f"{_format_value(series[-2])}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} "
                         f"{_format_value(series[-1])}")
        return lines


class Registry:
    """The metrics of one app, rendered together by ``GET /metrics``."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def _get_or_add(self, metric: _Metric) -> _Metric:
        with self._lock:
            existing = self._metrics.get(metric.name)
            if existing is None:
                self._metrics[metric.name] = metric
                return metric
        if type(existing) is not type(metric) or existing.labelnames != metric.labelnames:
            raise ValueError(f"metric {metric.name} already exists as a {existing.kind} with "
                             f"labels {list(existing.labelnames)}")
        return existing

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        metric = self._get_or_add(Counter(name, help, labelnames))
        assert isinstance(metric, Counter)
        return metric

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        metric = self._get_or_add(Gauge(name, help, labelnames))
        assert isinstance(metric, Gauge)
        return metric

    def gauge_callback(self, name: str, help: str, labelnames: Sequence[str],
                       callback: Callable[[], Iterable[Sample]]) -> Gauge:
        """A gauge whose samples ``callback`` computes at each scrape (pool sizes, queue depths
        that are cheap to read)."""
        metric = self._get_or_add(Gauge(name, help, labelnames, callback))
        assert isinstance(metric, Gauge)
        return metric

    def histogram(self, name: str, help: str, labelnames: Sequence[str] = (),
                  buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
        metric = self._get_or_add(Histogram(name, help, labelnames, buckets))
        assert isinstance(metric, Histogram)
        return metric

    def render(self) -> str:
        with self._lock:
            metrics = sorted(self._metrics.values(), key=lambda m: m.name)
        lines: list[str] = []
        for metric in metrics:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
