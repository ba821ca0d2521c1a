"""examples/grafana-dashboard.json against the metrics the ingress exposes: every series its queries read exists, and
every metric has a panel, so neither side can change without the other."""

from __future__ import annotations

import json
import re
from pathlib import Path

from aimu_ray.deployments.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana-dashboard.json"
SERIES = re.compile(r"\baimu_ray_[a-z_]*[a-z]\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exposed() -> dict[str, str]:
    """Each series name ``GET /metrics`` writes → the metric it belongs to."""
    return {family.name + suffix: family.name for family in Metrics().registry.collect()
            for suffix in SUFFIXES[family.type]}


def queries(dashboard: dict) -> list[str]:
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def variable_queries(dashboard: dict) -> list[str]:
    return [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]


def test_every_series_a_query_reads_is_one_the_ingress_exposes():
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for expr in queries(dashboard) + variable_queries(dashboard) for name in SERIES.findall(expr)}
    assert used and used <= set(exposed()), sorted(used - set(exposed()))


def test_every_metric_has_a_panel():
    read = {exposed()[name] for expr in queries(json.loads(DASHBOARD.read_text())) for name in SERIES.findall(expr)}
    assert read == set(exposed().values())


def test_every_panel_reads_the_chosen_datasource():
    dashboard = json.loads(DASHBOARD.read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["name"] == "datasource"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    assert all(t["datasource"]["uid"] == "${datasource}" for p in panels for t in p["targets"])
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_serving_layer_and_the_engine_each_have_their_latency_panel():
    titles = {p["title"]: p for p in json.loads(DASHBOARD.read_text())["panels"]}
    for title, series in (("Serving layer p50 / p95", "aimu_ray_serving_seconds_bucket"),
                          ("Engine p50 / p95", "aimu_ray_engine_seconds_bucket")):
        assert [series in t["expr"] for t in titles[title]["targets"]] == [True, True]
