"""The alert rules and the Grafana dashboard: valid for promtool, unit-tested alerts, and every
query built on metrics the modules (or Envoy) really publish, with the labels they really carry."""

import json
import re
import subprocess

import yaml

from harness.stack import ROOT

RULES = ROOT / "istio/monitoring/sluice-alerts.rules.yaml"
DASHBOARD = ROOT / "istio/monitoring/sluice-dashboard.json"
METRICS_RS = ROOT / "shared/src/metrics.rs"
# Grafana's variables, replaced by what they stand for when checking a query's syntax.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1d", "$team": ".*"}


def published_metrics() -> set:
    return set(re.findall(r'pub const [A-Z_]+: &str = "(sluice_[a-z_]+)";', METRICS_RS.read_text()))


def label_keys() -> set:
    block = re.search(r"pub const LABEL_KEYS: &\[&str\] = &\[(.*?)\];", METRICS_RS.read_text(), re.S).group(1)
    return set(re.findall(r'"(\w+)"', block))


def queries():
    rules = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    return rules, panels


def test_rules_pass_promtool_and_their_unit_tests():
    subprocess.run(["promtool", "check", "rules", str(RULES)], check=True, capture_output=True)
    out = subprocess.run(["promtool", "test", "rules", "alerts.test.yaml"], cwd=ROOT / "tests/monitoring",
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tested = set(re.findall(r"alertname: (\w+)", (ROOT / "tests/monitoring/alerts.test.yaml").read_text()))
    assert alerts == tested == {"SluiceBudgetAt70Percent", "SluiceBudgetAt90Percent", "SluiceProviderErrorRate",
                                "SluiceLatencyP99Above5s", "SluiceCacheHitRateBelow20Percent"}


def test_every_query_uses_real_metrics_and_labels():
    published = published_metrics()
    labels = label_keys() | {"le", "envoy_cluster_name"}
    rules, panels = queries()
    for expr in rules + panels:
        expr = re.sub(r'"[^"]*"', '""', expr)  # label values are not names
        for name in re.findall(r"\b(sluice_[a-z_]+)", expr):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert base in published, f"{name} in {expr}"
        for name in re.findall(r"\b(envoy_[a-z_]+)", expr):
            assert name.startswith("envoy_cluster_upstream_rq_") or name == "envoy_cluster_name", name
        for label in re.findall(r"\b(?:by|without) \(([^)]*)\)", expr):
            for key in (k.strip() for k in label.split(",")):
                assert key in labels, f"label {key} in {expr}"
        for key in re.findall(r"[{,]\s*(\w+)\s*(?:=~|!=|=)", expr):
            assert key in labels, f"label {key} in {expr}"


def test_dashboard_queries_are_valid_promql(tmp_path):
    """Each panel query, its Grafana variables filled in, as a recording rule for promtool."""
    _, panels = queries()
    rules = []
    for i, expr in enumerate(panels):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"sluice:panel_{i}", "expr": expr})
    path = tmp_path / "panels.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_covers_what_operators_asked_for():
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ["cost per team per day", "most expensive models", "output / input tokens", "cache hit rate",
                  "budget rejections", "soft-limit alerts", "time to first token", "error rate per provider",
                  "fallback rate", "most expensive requests", "cost per feature per day"]:
        assert topic in titles, topic
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "team"}


def test_the_configuration_reference_is_current():
    from harness import config_reference
    assert config_reference.REFERENCE.read_text() == config_reference.reference(), "run `make docs`"
    reference = config_reference.reference()
    for module in config_reference.MODULES:
        schema = json.loads((ROOT / "plugins" / module / "config.schema.json").read_text())
        for field in schema["properties"]:
            assert f"| `{field}` |" in reference, (module, field)


def test_the_benchmark_results_page_is_current_and_covers_every_variant(tmp_path):
    from harness import bench, bench_report
    assert bench_report.PAGE.read_text() == bench_report.page(), "run `make docs`"
    results = json.loads((bench_report.RESULTS / "latest.json").read_text())
    # Every variant `make bench` measures has figures on record, and a section on the page.
    variants = {v[0] for v in bench.all_variants(tmp_path, tmp_path)} - {"plain"}
    assert {v for v, _, _ in bench_report.SECTIONS} == variants
    measured = set(results["variants"])
    sections = {variant for variant, _, _ in bench_report.SECTIONS}
    assert sections <= measured, f"no figures for {sorted(sections - measured)}: run `make bench`"
    for variant in sections:
        assert results["variants"][variant]["scenarios"], variant
    assert (bench_report.RESULTS / "peers.json").exists(), "run `make bench-peers`"
