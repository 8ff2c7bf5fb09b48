"""With monitoring on, Prometheus reaches every metric the chart's alerts read: a ServiceMonitor
selects the API's Service (exactly that Service) on its named port at /metrics, beside the Ray head's
ServiceMonitor and the workers' PodMonitor; with monitoring off none of them is rendered. (Which
metric names the alerts read, and that the API exports them, is tests/unit/test_metrics.py.)"""

from __future__ import annotations

from tests.chart._render import CHART, render

MONITORING = CHART / "ci" / "gpu-rayjob-values.yaml"


def _matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_a_service_monitor_scrapes_the_apis_metrics_port_and_path():
    docs = render(MONITORING)
    (monitor,) = [d for d in docs if d["kind"] == "ServiceMonitor" and d["metadata"]["name"] == "doctune-api"]
    selected = [d for d in docs if d["kind"] == "Service"
                and _matches(monitor["spec"]["selector"]["matchLabels"], d["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in selected] == ["doctune-api"]
    ports = {p["name"] for p in selected[0]["spec"]["ports"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics" and endpoint["interval"] == "30s"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # the values' extra labels


def test_ray_metrics_are_scraped_from_the_head_and_the_workers():
    kinds = {(d["kind"], d["metadata"]["name"]) for d in render(MONITORING)}
    assert {("ServiceMonitor", "doctune-ray"), ("PodMonitor", "doctune-ray-workers")} <= kinds


def test_monitoring_off_renders_no_prometheus_operator_object():
    assert not [d for d in render(None) if d["kind"] in ("ServiceMonitor", "PodMonitor", "PrometheusRule")]
