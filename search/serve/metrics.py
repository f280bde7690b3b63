"""Request counts, a latency histogram and errors, in Prometheus' text format (version 0.0.4)."""
from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self._sums: dict[str, float] = defaultdict(float)
        self._errors: dict[str, int] = defaultdict(int)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, status)] += 1
            buckets = self._buckets[route]
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            buckets[-1] += 1
            self._sums[route] += seconds
            if status >= 500:
                self._errors[route] += 1

    def render(self, gauges: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> str:
        with self._lock:
            lines = ["# HELP xmodal_requests_total Requests answered, by method, route and status.",
                     "# TYPE xmodal_requests_total counter"]
            for (method, route, status), count in sorted(self._requests.items()):
                lines.append(f'xmodal_requests_total{{method="{method}",route="{route}",status="{status}"}} {count}')
            lines += ["# HELP xmodal_request_seconds Time to answer a request.",
                      "# TYPE xmodal_request_seconds histogram"]
            for route, buckets in sorted(self._buckets.items()):
                for bound, count in zip(BUCKETS, buckets):
                    lines.append(f'xmodal_request_seconds_bucket{{route="{route}",le="{bound}"}} {count}')
                lines.append(f'xmodal_request_seconds_bucket{{route="{route}",le="+Inf"}} {buckets[-1]}')
                lines.append(f'xmodal_request_seconds_sum{{route="{route}"}} {self._sums[route]:.6f}')
                lines.append(f'xmodal_request_seconds_count{{route="{route}"}} {buckets[-1]}')
            lines += ["# HELP xmodal_errors_total Requests that failed on the server's side (status 5xx).",
                      "# TYPE xmodal_errors_total counter"]
            for route, count in sorted(self._errors.items()):
                lines.append(f'xmodal_errors_total{{route="{route}"}} {count}')
        for name, series in gauges.items():
            lines += [f"# TYPE {name} gauge"]
            for labels, value in series.items():
                rendered = ",".join(f'{k}="{v}"' for k, v in labels)
                lines.append(f"{name}{{{rendered}}} {value:g}")
        return "\n".join(lines) + "\n"
