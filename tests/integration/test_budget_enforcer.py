"""The budget enforcer inside a real Envoy with real Redis and webdis: keys, every limit kind and
window, 429/401/403 answers, queueing, downgrades, spend charged after the answer, two gateways
sharing one budget, and the bridge going away under load."""

import concurrent.futures
import contextlib
import json
import re
import time
import uuid

import pytest
import requests

from harness.procs import wait_until
from harness.client import post
from harness.stack import DEMO_KEY, Stack, assert_config_rejected, key_entry, running

CHAT = "/v1/chat/completions"
PREFIX = "sluice"

# One limit per test case, selected by the key's `metadata.case`, so tests never share counters.
LIMITS = [
    {"name": "rpm", "scope": "key", "kind": "requests", "window": "minute", "limit": 3,
     "match": {"metadata": {"case": "rpm"}}},
    {"name": "rps", "scope": "key", "kind": "requests", "window": "second", "limit": 2,
     "match": {"metadata": {"case": "rps"}}},
    {"name": "hourly-user", "scope": "user", "kind": "requests", "window": "hour", "limit": 2,
     "match": {"metadata": {"case": "user"}}},
    {"name": "daily-team", "scope": "team", "kind": "requests", "window": "day", "limit": 2,
     "match": {"metadata": {"case": "team"}}},
    {"name": "per-model", "scope": "model", "kind": "requests", "window": "day", "limit": 1,
     "match": {"metadata": {"case": "model"}}},
    {"name": "quality-tier", "scope": "key", "kind": "requests", "window": "hour", "limit": 2,
     "match": {"metadata": {"case": "tier"}, "models": ["quality-*"]}},
    {"name": "tokens", "scope": "key", "kind": "tokens", "window": "hour", "limit": 100, "alert_at": 0.5,
     "match": {"metadata": {"case": "tokens"}}},
    {"name": "monthly-usd", "scope": "key", "kind": "usd", "window": "month", "limit": 0.0002,
     "match": {"metadata": {"case": "usd"}}},
    {"name": "gpt4o-usd", "scope": "key", "kind": "usd", "window": "month", "limit": 0.0002,
     "match": {"metadata": {"case": "downgrade"}, "models": ["gpt-4o"]},
     "action": "downgrade", "downgrade_to": "gpt-4o-mini"},
    {"name": "queued", "scope": "key", "kind": "requests", "window": "second", "limit": 1,
     "match": {"metadata": {"case": "queue"}}, "action": "queue"},
    {"name": "burst", "scope": "key", "kind": "requests", "window": "hour", "limit": 50,
     "match": {"metadata": {"case": "burst"}}},
    {"name": "token-burst", "scope": "key", "kind": "tokens", "window": "hour", "limit": 1000,
     "match": {"metadata": {"case": "token-burst"}}},
    {"name": "spend", "scope": "key", "kind": "tokens", "window": "day", "limit": 100000000,
     "match": {"metadata": {"case": "spend"}}},
    {"name": "shared-global", "scope": "global", "kind": "requests", "window": "hour", "limit": 50,
     "match": {"metadata": {"case": "global"}}},
    # Limits far from full: leases admit most requests without asking Redis.
    {"name": "leased", "scope": "key", "kind": "requests", "window": "hour", "limit": 1000000,
     "match": {"metadata": {"case": "leased"}}},
    {"name": "leased-tokens", "scope": "key", "kind": "tokens", "window": "hour", "limit": 1000000000,
     "match": {"metadata": {"case": "leased"}}},
    # Big enough for leases, small enough to be reached.
    {"name": "leased-edge", "scope": "key", "kind": "requests", "window": "hour", "limit": 400,
     "match": {"metadata": {"case": "edge"}}},
    {"name": "shared-big", "scope": "global", "kind": "requests", "window": "hour", "limit": 600,
     "match": {"metadata": {"case": "global-big"}}},
    # Attribution dimensions (DIMENSIONS): one counter per feature.
    {"name": "per-feature", "scope": "feature", "kind": "requests", "window": "hour", "limit": 30,
     "match": {"metadata": {"case": "feature"}}},
    {"name": "search-only", "scope": "key", "kind": "requests", "window": "hour", "limit": 1,
     "match": {"metadata": {"case": "search-only"}, "feature": ["search"]}},
]

# Only the `features-svc` team may say which feature a request is for; anyone else's header is
# ignored (feature) or refused (project).
DIMENSIONS = {
    "feature": {"header": "x-sluice-feature", "trusted": {"teams": ["features-svc"]}, "metadata": "feature",
                "values": ["search", "summaries"]},
    "project": {"header": "x-sluice-project", "trusted": {"teams": ["features-svc"]}, "untrusted": "refuse",
                "metadata": "project"},
}

CONFIG = {
    "keys": [key_entry(DEMO_KEY, "demo", team="demo", user="ann", models=["gpt-4o*", "quality-*"])],
    "redis_keys": {"enabled": True, "cache_ttl_ms": 500, "negative_cache_ttl_ms": 200},
    "limits": LIMITS,
    "dimensions": DIMENSIONS,
    # Verified JWTs beside keys (Envoy's jwt_authn in front, the Stack's own issuer).
    "jwt": {"payload_header": "x-sluice-jwt-payload", "team_claim": "team", "user_claim": "email",
            "metadata_claims": {"case": "case", "feature": "feature"}, "models": ["gpt-4o*"]},
    "queue": {"max_wait_ms": 1500, "poll_interval_ms": 50},
    "prices": {"gpt-4o": {"input": 2.5, "output": 10}, "gpt-4o-mini": {"input": 0.15, "output": 0.6}},
    "redis": {"timeout_ms": 250},
}


def body(model="gpt-4o", content="What is the capital of France?", **extra):
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def new_key(stack, case=None, **fields):
    """Stores a fresh virtual key in Redis; returns (key, alias)."""
    key = f"sk-test-{uuid.uuid4().hex}"
    alias = f"k-{uuid.uuid4().hex[:8]}"
    record = {"alias": alias, **fields}
    if case:
        record["metadata"] = {"case": case}
    digest = key_entry(key, alias)["sha256"]
    stack.redis("SET", f"{PREFIX}:key:{digest}", json.dumps(record))
    return key, alias


def auth(key):
    return {"authorization": f"Bearer {key}"}



def counter(stack, limit, scope, subject):
    """The value of a limit's counters (summed over windows present)."""
    keys = stack.redis("KEYS", f"{PREFIX}:limit:{limit}:{scope}:{subject}:*").split()
    return sum(int(stack.redis("GET", k) or 0) for k in keys)


def settled(stack, limit, scope, subject, expected, what="charges in Redis"):
    return wait_until(lambda: counter(stack, limit, scope, subject) == expected, what, 10)


def error_of(response):
    return response.json()["error"]


@pytest.fixture(scope="module")
def budget():
    for s in running(configs={"sluice.budget_enforcer": CONFIG}):
        # The first call to a fresh bridge opens its connection; keep that out of the tests.
        requests.post(s.url(CHAT), json=body(), headers=auth(DEMO_KEY), timeout=30)
        yield s


# --- identity ---------------------------------------------------------------------------------

def test_missing_key_is_401(budget):
    r = requests.post(budget.url(CHAT), json=body())
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/json"
    assert error_of(r) == {"message": error_of(r)["message"], "type": "authentication_error", "param": None,
                           "code": "missing_api_key"}


@pytest.mark.parametrize("headers", [
    {"authorization": "Bearer sk-wrong"},
    {"x-api-key": "sk-wrong"},
    {"authorization": b"Bearer \xff\xfe"},
    {"authorization": "Basic abc"},
])
def test_unknown_or_malformed_key_is_401(budget, headers):
    r = requests.post(budget.url(CHAT), json=body(), headers=headers)
    assert r.status_code == 401
    assert error_of(r)["type"] == "authentication_error"


def test_configured_key_by_either_header_and_never_forwarded(budget):
    requests.delete(budget.mock("/mock/requests"))
    assert post(budget, body(), key=DEMO_KEY).status_code == 200
    r = requests.post(budget.url(CHAT), json=body(), headers={"x-api-key": DEMO_KEY})
    assert r.status_code == 200
    seen = requests.get(budget.mock("/mock/requests")).json()
    assert len(seen) == 2
    for request in seen:
        names = {n.lower() for n in request["headers"]}
        assert "authorization" not in names and "x-api-key" not in names
        assert DEMO_KEY not in json.dumps(request)


def test_model_not_allowed_is_403(budget):
    r = post(budget, body(model="claude-3-5-sonnet"), key=DEMO_KEY)
    assert r.status_code == 403
    assert error_of(r)["type"] == "permission_error"
    assert error_of(r)["code"] == "model_not_allowed"
    assert error_of(r)["param"] == "model"


def test_identity_facts_reach_the_access_log_and_the_token_counter(budget):
    key, alias = new_key(budget, team="facts-team", user="fiona")
    model = f"gpt-4o-{uuid.uuid4().hex[:6]}"
    assert post(budget, body(model=model), key=key).status_code == 200
    line = wait_until(lambda: next((l for l in budget.access_log() if l.get("model") == model), None), "log line")
    assert (line["key"], line["team"], line["user"], line["budget"]) == (alias, "facts-team", "fiona", "admitted")
    assert wait_until(lambda: budget.metric("sluice_tokens_total", model=model, direction="input",
                                            provider="openai", team="facts-team") == 21, "team-labelled tokens")


# --- attribution dimensions --------------------------------------------------------------------

def feature_key(stack, team="features-svc", **metadata):
    return new_key(stack, team=team, metadata={"case": "feature", **metadata})


def test_a_trusted_feature_header_attributes_the_request(budget):
    key, alias = feature_key(budget)
    model = f"gpt-4o-{uuid.uuid4().hex[:6]}"
    requests.delete(budget.mock("/mock/requests"))
    r = post(budget, body(model=model), key=key, headers={"x-sluice-feature": "search", "x-sluice-project": "apollo"})
    assert r.status_code == 200, r.text
    line = wait_until(lambda: next((l for l in budget.access_log() if l.get("model") == model), None), "log line")
    assert (line["feature"], line["project"], line["dimensions"]) == ("search", "apollo", "feature=search;project=apollo")
    assert counter(budget, "per-feature", "feature", "search") >= 1
    seen = requests.get(budget.mock("/mock/requests")).json()
    assert seen and not any(h.lower().startswith("x-sluice-") for s in seen for h in s["headers"]), "headers go no further"
    # The bill per feature: cost and spend carry the feature and project.
    assert wait_until(lambda: budget.metric("sluice_cost_micro_usd_total", model=model, feature="search",
                                            project="apollo") > 0, "cost by feature")
    assert wait_until(lambda: budget.metric("sluice_budget_spend_micro_usd_total", key=alias, feature="search",
                                            project="apollo") > 0, "spend by feature")


def test_a_client_sent_feature_header_is_ignored_where_it_is_not_trusted(budget):
    key, alias = feature_key(budget, team="sales", feature="summaries")
    model = f"gpt-4o-{uuid.uuid4().hex[:6]}"
    before = counter(budget, "per-feature", "feature", "search")
    assert post(budget, body(model=model), key=key, headers={"x-sluice-feature": "search"}).status_code == 200
    line = wait_until(lambda: next((l for l in budget.access_log() if l.get("model") == model), None), "log line")
    assert line["feature"] == "summaries", "the key's own feature, not the client's"
    assert counter(budget, "per-feature", "feature", "search") == before
    # A dimension that refuses untrusted headers: 403, nothing counted.
    r = post(budget, body(), key=key, headers={"x-sluice-project": "apollo"})
    assert r.status_code == 403 and error_of(r)["code"] == "attribution_not_allowed", r.text
    assert "x-sluice-project" in error_of(r)["message"]


def test_unknown_feature_values_count_as_other(budget):
    key, _ = feature_key(budget)
    model = f"gpt-4o-{uuid.uuid4().hex[:6]}"
    before = counter(budget, "per-feature", "feature", "other")
    for invented in ["made-up", "x" * 200, "a;b=c"]:
        assert post(budget, body(model=model), key=key, headers={"x-sluice-feature": invented}).status_code == 200
    assert counter(budget, "per-feature", "feature", "other") == before + 3
    lines = wait_until(lambda: [l for l in budget.access_log() if l.get("model") == model][2:] and
                       [l for l in budget.access_log() if l.get("model") == model], "log lines")
    assert {l["feature"] for l in lines} == {"other"}


def test_a_limit_per_feature_is_exact_under_concurrency(budget):
    """60 concurrent requests per feature, by keys of one trusted team: 30 admitted each."""
    for feature in ["search", "summaries"]:
        budget.redis("DEL", *(budget.redis("KEYS", f"{PREFIX}:limit:per-feature:feature:{feature}:*").split() or ["none"]))
    keys = [feature_key(budget)[0] for _ in range(4)]

    def one(i):
        feature = ["search", "summaries"][i % 2]
        r = post(budget, body(), key=keys[i % 4], headers={"x-sluice-feature": feature})
        return feature, r.status_code

    with concurrent.futures.ThreadPoolExecutor(60) as pool:
        results = list(pool.map(one, range(120)))
    for feature in ["search", "summaries"]:
        codes = [code for f, code in results if f == feature]
        assert codes.count(200) == 30 and codes.count(429) == 30, (feature, codes)
        assert counter(budget, "per-feature", "feature", feature) == 30


def test_a_limit_can_match_a_feature(budget):
    key, _ = new_key(budget, team="features-svc", metadata={"case": "search-only"})
    assert post(budget, body(), key=key, headers={"x-sluice-feature": "summaries"}).status_code == 200
    assert post(budget, body(), key=key, headers={"x-sluice-feature": "summaries"}).status_code == 200
    assert post(budget, body(), key=key, headers={"x-sluice-feature": "search"}).status_code == 200
    r = post(budget, body(), key=key, headers={"x-sluice-feature": "search"})
    assert r.status_code == 429 and r.headers["x-sluice-budget-limit"] == "search-only", r.text


def test_dimension_labels_are_capped():
    """A dimension open to any value, by a trusted key: at most `max_label_values` distinct
    values per worker in the metrics, the rest `other`, and no spend lost."""
    cap = 4
    config = {"keys": [key_entry(DEMO_KEY, "demo", team="features-svc")], "max_label_values": cap,
              "dimensions": {"project": {"header": "x-sluice-project", "trusted": {"teams": ["features-svc"]}}}}
    configs = {"sluice.budget_enforcer": config, "sluice.token_counter": {"max_label_values": cap}}
    for stack in running(configs=configs, concurrency=1, modules=["sluice.budget_enforcer", "sluice.token_counter"]):
        for i in range(10):
            assert post(stack, body(), headers={"x-sluice-project": f"p{i}"}).status_code == 200
        text = wait_until(lambda: (t := stack.prometheus()).count("sluice_cost_micro_usd_total{") >= cap + 1 and t,
                          "cost metrics")
        projects = set(re.findall(r'sluice_cost_micro_usd_total\{[^}]*project="([^"]*)"', text))
        assert len(projects) == cap + 1 and "other" in projects, projects
        # gpt-4o, the mock's 21 + 7 tokens: 122.5 micro-USD, rounded half up by the counter.
        assert stack.metric("sluice_cost_micro_usd_total") == 10 * 123, "no spend lost to `other`"


# --- identity from JWTs --------------------------------------------------------------------------

def bearer(token):
    return {"authorization": f"Bearer {token}"}


def test_a_verified_jwt_is_an_identity_beside_keys(budget):
    sub = f"svc-{uuid.uuid4().hex[:6]}"
    model = f"gpt-4o-{uuid.uuid4().hex[:6]}"
    token = budget.issuer.token({"sub": sub, "team": "jwt-team", "email": "bot@example.com", "feature": "search"})
    requests.delete(budget.mock("/mock/requests"))
    r = post(budget, body(model=model), key=None, headers=bearer(token))
    assert r.status_code == 200, r.text
    line = wait_until(lambda: next((l for l in budget.access_log() if l.get("model") == model), None), "log line")
    assert (line["key"], line["team"], line["user"], line["feature"]) == (f"jwt:{sub}", "jwt-team", "bot@example.com",
                                                                         "search")
    seen = requests.get(budget.mock("/mock/requests")).json()
    assert seen and not any(token in json.dumps(s["headers"]) or "x-sluice-jwt-payload" in s["headers"] for s in seen)
    # The token's allow-list holds (models: gpt-4o*).
    r = post(budget, body(model="claude-sonnet-4-6"), key=None, headers=bearer(token))
    assert r.status_code == 403 and error_of(r)["code"] == "model_not_allowed"


def test_jwt_identities_share_limits_like_keys(budget):
    """A team limit counts every token of the team, whoever its subject."""
    team = f"t-{uuid.uuid4().hex[:6]}"
    tokens = [budget.issuer.token({"sub": f"s{i}", "team": team, "case": "team"}) for i in range(3)]
    codes = [post(budget, body(), key=None, headers=bearer(t)).status_code for t in tokens]
    assert codes == [200, 200, 429], codes
    assert counter(budget, "daily-team", "team", team) == 2


@pytest.mark.parametrize("why", ["expired", "wrongly signed", "another issuer", "another audience", "no subject"])
def test_a_jwt_that_does_not_verify_is_401(budget, why):
    from harness.tokens import other_key
    issuer = budget.issuer
    token = {
        "expired": lambda: issuer.token({"sub": "x"}, ttl_s=-120),
        "wrongly signed": lambda: issuer.token({"sub": "x"}, key=other_key()),
        "another issuer": lambda: issuer.token({"sub": "x"}, issuer="https://evil.example"),
        "another audience": lambda: issuer.token({"sub": "x"}, audience="someone-else"),
        # Verified, but it names nobody (no `sub`).
        "no subject": lambda: issuer.token({"team": "x"}),
    }[why]()
    r = post(budget, body(), key=None, headers=bearer(token))
    assert r.status_code == 401 and error_of(r)["code"] == "invalid_token", r.text


def test_a_spoofed_payload_header_is_never_believed(budget):
    import base64
    forged = base64.urlsafe_b64encode(json.dumps({"sub": "admin", "team": "root"}).encode()).decode().rstrip("=")
    r = post(budget, body(), key=None, headers={"x-sluice-jwt-payload": forged})
    assert r.status_code == 401 and error_of(r)["code"] == "missing_api_key", r.text
    # Beside a key, the key names the identity, not the forged claims.
    key, alias = new_key(budget)
    model = f"gpt-4o-{uuid.uuid4().hex[:6]}"
    assert post(budget, body(model=model), key=key, headers={"x-sluice-jwt-payload": forged}).status_code == 200
    line = wait_until(lambda: next((l for l in budget.access_log() if l.get("model") == model), None), "log line")
    assert line["key"] == alias and line["team"] != "root"


def test_redis_keys_can_be_revoked(budget):
    key, _ = new_key(budget)
    assert post(budget, body(), key=key).status_code == 200
    budget.redis("DEL", f"{PREFIX}:key:{key_entry(key, 'x')['sha256']}")
    # Workers trust a key for `cache_ttl_ms` (500 ms here).
    wait_until(lambda: post(budget, body(), key=key).status_code == 401, "revocation", 5)


def test_unreadable_key_record_is_503_not_a_crash(budget):
    key = f"sk-test-{uuid.uuid4().hex}"
    budget.redis("SET", f"{PREFIX}:key:{key_entry(key, 'x')['sha256']}", "{not json")
    r = post(budget, body(), key=key)
    assert r.status_code == 503
    assert error_of(r)["code"] == "budget_unavailable"


# --- bad requests -------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"{not json", b"[1,2]", b'{"model": 5}', b"\xff\xfe{}",
                                 b'{"model":"gpt-4o","model":"claude-3"}'])
def test_unreadable_bodies_are_400(budget, raw):
    r = requests.post(budget.url(CHAT), data=raw, headers={**auth(DEMO_KEY), "content-type": "application/json"})
    assert r.status_code == 400
    assert error_of(r)["type"] == "invalid_request_error"


def test_the_model_list_needs_a_key_and_other_paths_are_404(budget):
    assert requests.get(budget.url("/v1/models")).status_code == 401
    # The mock answers any path: a 200 shows the model list went through.
    assert requests.get(budget.url("/v1/models"), headers=auth(DEMO_KEY)).status_code == 200
    # Default deny: a path the chain does not read never reaches the provider.
    r = requests.post(budget.url("/v1/files"), data=b"\xff not json" * 1000, headers=auth(DEMO_KEY))
    assert r.status_code == 404 and error_of(r)["code"] == "unknown_url"
    r = requests.post(budget.url(CHAT), headers=auth(DEMO_KEY))
    assert r.status_code == 400 and error_of(r)["code"] == "missing_body"


# --- limits ------------------------------------------------------------------------------------

def test_requests_per_minute_then_429_with_openai_headers(budget):
    key, alias = new_key(budget, "rpm")
    # All four requests must fall in one minute window, and waiting for the gauge can take a
    # stats flush: start early enough in a minute.
    if time.time() % 60 > 35:
        time.sleep(60.2 - time.time() % 60)
    remaining = []
    for _ in range(3):
        r = post(budget, body(), key=key)
        assert r.status_code == 200
        remaining.append(r.headers["x-ratelimit-remaining-requests"])
        assert r.headers["x-ratelimit-limit-requests"] == "3"
    assert remaining == ["2", "1", "0"]
    # The alerts' gauge: 3 of 3 used (Envoy publishes gauges at its stats flush).
    wait_until(lambda: budget.metric("sluice_budget_used_percent", limit="rpm") == 100 or None, "used percent", 15)
    r = post(budget, body(), key=key)
    assert r.status_code == 429
    err = error_of(r)
    assert (err["type"], err["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert "rpm" in err["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.headers["x-sluice-budget-limit"] == "rpm"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["x-ratelimit-reset-requests"].endswith("s")
    assert counter(budget, "rpm", "key", alias) == 3
    assert budget.metric("sluice_budget_rejections_total", reason="limit", limit="rpm") >= 1


def test_requests_per_second_window_resets(budget):
    key, _ = new_key(budget, "rps")
    # Start at the beginning of a second so the three requests share it.
    time.sleep(1 - time.time() % 1 + 0.02)
    codes = [post(budget, body(), key=key).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    time.sleep(1 - time.time() % 1 + 0.02)
    assert post(budget, body(), key=key).status_code == 200


@pytest.mark.parametrize("scope,case,shared_field,limit_name,allowed", [
    ("user", "user", "user", "hourly-user", 2),
    ("team", "team", "team", "daily-team", 2),
])
def test_user_and_team_limits_are_shared_by_their_keys(budget, scope, case, shared_field, limit_name, allowed):
    subject = f"{scope}-{uuid.uuid4().hex[:6]}"
    keys = [new_key(budget, case, **{shared_field: subject})[0] for _ in range(2)]
    codes = [post(budget, body(), key=keys[i % 2]).status_code for i in range(allowed + 1)]
    assert codes == [200] * allowed + [429]
    assert counter(budget, limit_name, scope, subject) == allowed


def test_model_scope_counts_each_model_apart(budget):
    key, _ = new_key(budget, "model")
    a, b = f"gpt-4o-{uuid.uuid4().hex[:6]}", f"gpt-4o-{uuid.uuid4().hex[:6]}"
    assert post(budget, body(model=a), key=key).status_code == 200
    assert post(budget, body(model=b), key=key).status_code == 200
    assert post(budget, body(model=a), key=key).status_code == 429


def test_quality_tier_limit_applies_only_to_its_models(budget):
    key, _ = new_key(budget, "tier")
    assert [post(budget, body(model="quality-large"), key=key).status_code for _ in range(3)] == [200, 200, 429]
    assert post(budget, body(model="gpt-4o-mini"), key=key).status_code == 200


def test_token_limit_checks_the_estimate_and_charges_actual_usage(budget):
    key, alias = new_key(budget, "tokens")
    usage = {"x-mock-prompt-tokens": "40", "x-mock-completion-tokens": "20"}
    r = post(budget, body(), key=key, headers=usage)
    assert r.status_code == 200
    assert settled(budget, "tokens", "key", alias, 60)
    # 40 of 100 left: a prompt estimated past that is refused before it is sent...
    r = post(budget, body(content="word " * 60), key=key, headers=usage)
    assert r.status_code == 429
    assert r.headers["x-ratelimit-remaining-tokens"] == "40"
    # ...a short one fits, past the 50% alert share.
    r = post(budget, body(), key=key, headers=usage)
    assert r.status_code == 200
    assert r.headers["x-sluice-budget-alert"] == "tokens"
    assert budget.metric("sluice_budget_alerts_total", limit="tokens") >= 1
    assert settled(budget, "tokens", "key", alias, 120)
    r = post(budget, body(), key=key)
    assert r.status_code == 429
    assert r.headers["x-ratelimit-limit-tokens"] == "100"
    assert r.headers["x-ratelimit-remaining-tokens"] == "0"


def test_usd_limit_per_month(budget):
    key, alias = new_key(budget, "usd")
    # gpt-4o: 21 prompt tokens at $2.5/M + 7 completion at $10/M = $0.0001225 per request.
    assert post(budget, body(), key=key).status_code == 200
    assert settled(budget, "monthly-usd", "key", alias, 123)
    r = post(budget, body(), key=key)
    assert r.status_code == 200
    assert r.headers["x-ratelimit-limit-usd"] == "0.0002"
    assert settled(budget, "monthly-usd", "key", alias, 246)
    r = post(budget, body(), key=key)
    assert r.status_code == 429
    assert r.headers["x-ratelimit-remaining-usd"] == "0"
    month = time.strftime("%Y-%m", time.gmtime())
    assert budget.redis("KEYS", f"{PREFIX}:limit:monthly-usd:key:{alias}:*") == \
        f"{PREFIX}:limit:monthly-usd:key:{alias}:{month}"
    assert budget.metric("sluice_budget_spend_micro_usd_total", key=alias, team="none", model="gpt-4o") == 246


def test_downgrade_to_a_cheaper_model_when_the_budget_is_spent(budget):
    key, alias = new_key(budget, "downgrade")
    requests.delete(budget.mock("/mock/requests"))
    for _ in range(2):
        assert post(budget, body(), key=key).status_code == 200
    wait_until(lambda: counter(budget, "gpt4o-usd", "key", alias) >= 200, "spend in Redis", 10)
    r = post(budget, body(content=f"downgrade me {alias}"), key=key)
    assert r.status_code == 200
    sent = [json.loads(x["body"]) for x in requests.get(budget.mock("/mock/requests")).json()]
    assert [b["model"] for b in sent] == ["gpt-4o", "gpt-4o", "gpt-4o-mini"]
    assert sent[-1]["messages"][0]["content"] == f"downgrade me {alias}"
    line = wait_until(lambda: next((l for l in budget.access_log() if l.get("key") == alias
                                    and l.get("budget") == "downgraded"), None), "downgrade log line")
    assert line["downgraded_to"] == "gpt-4o-mini"


def test_queue_holds_the_request_until_the_window_has_room(budget):
    key, _ = new_key(budget, "queue")
    time.sleep(1 - time.time() % 1 + 0.02)
    assert post(budget, body(), key=key).status_code == 200
    started = time.time()
    r = post(budget, body(), key=key)
    waited = time.time() - started
    assert r.status_code == 200
    assert 0.3 < waited < 1.5, waited
    line = wait_until(lambda: next((l for l in budget.access_log() if l.get("budget") == "queued"), None), "log")
    assert line["status"] == 200


def test_queue_gives_up_at_its_deadline(budget):
    key, _ = new_key(budget, "queue")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        started = time.time()
        codes = list(pool.map(lambda _: post(budget, body(), key=key).status_code, range(8)))
        elapsed = time.time() - started
    # One per second is admitted; the wait is at most 1.5 s.
    assert 2 <= codes.count(200) <= 3, codes
    assert codes.count(429) == 8 - codes.count(200)
    assert elapsed < 3.5
    assert budget.metric("sluice_budget_rejections_total", reason="queue_timeout", limit="queued") >= 1


def test_streams_are_charged_from_their_final_usage(budget):
    key, alias = new_key(budget, "spend")
    r = post(budget, body(stream=True), key=key, headers={"x-mock-prompt-tokens": "30", "x-mock-completion-tokens": "12"}, stream=True)
    assert r.status_code == 200
    _ = r.content
    assert settled(budget, "spend", "key", alias, 42)


def test_cut_streams_are_charged_for_what_streamed(budget):
    key, alias = new_key(budget, "spend")
    text = "one two three four five six seven eight nine ten " * 20
    try:
        r = post(budget, body(stream=True), key=key, stream=True, headers={"x-mock-text": text, "x-mock-reset-after": "900", "x-mock-usage": "off"})
        _ = r.content
    except requests.exceptions.RequestException:
        pass
    # The prompt is counted and the part of the answer that streamed, not the whole answer.
    line = wait_until(lambda: next((l for l in budget.access_log() if l.get("key") == alias), None), "log line")
    expected = int(line["prompt_tokens"]) + int(line["completion_tokens"])
    assert 0 < int(line["completion_tokens"]) < 200
    assert settled(budget, "spend", "key", alias, expected)


def test_failed_upstream_is_not_charged_tokens(budget):
    key, alias = new_key(budget, "spend")
    assert post(budget, body(), key=key, headers={"x-mock-status": "500"}).status_code == 500
    # The prompt estimate was reserved before the request went upstream, then refunded.
    line = wait_until(lambda: next((l for l in budget.access_log() if l.get("key") == alias), None), "log line")
    assert line["status"] == 500
    assert settled(budget, "spend", "key", alias, 0, "the reservation refunded")
    assert budget.redis("KEYS", f"{PREFIX}:limit:spend:key:{alias}:*") != ""


# --- concurrency -------------------------------------------------------------------------------

def test_200_concurrent_requests_against_a_limit_of_50_admit_exactly_50(budget):
    key, alias = new_key(budget, "burst")
    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        codes = list(pool.map(lambda _: post(budget, body(), key=key).status_code, range(200)))
    assert codes.count(200) == 50, codes
    assert codes.count(429) == 150
    assert counter(budget, "burst", "key", alias) == 50


def test_token_overspend_is_bounded_by_the_requests_in_flight(budget):
    key, alias = new_key(budget, "token-burst")
    prompt, completion, sent = 21, 40, 100
    usage = {"x-mock-prompt-tokens": str(prompt), "x-mock-completion-tokens": str(completion),
             "x-mock-latency-ms": "50"}
    with concurrent.futures.ThreadPoolExecutor(100) as pool:
        codes = list(pool.map(lambda _: post(budget, body(), key=key, headers=usage).status_code, range(sent)))
    admitted = codes.count(200)
    assert codes.count(429) == sent - admitted
    assert settled(budget, "token-burst", "key", alias, admitted * (prompt + completion))
    # What one such request reserves: what a fresh key's counter has left after it.
    probe, _ = new_key(budget, "token-burst")
    estimate = 1000 - int(post(budget, body(), key=probe, headers=usage).headers["x-ratelimit-remaining-tokens"])
    assert 0 < estimate < prompt + completion
    spent = admitted * (prompt + completion)
    overspend = max(0, spent - 1000)
    # Before the answers, each admitted request held only its prompt estimate: what the answers
    # add beyond it is the only way past the limit, so the overrun is bounded by the requests
    # admitted together times that difference.
    bound = admitted * (prompt + completion - estimate)
    print(f"\ntoken limit 1000, {sent} concurrent: {admitted} admitted, spent {spent}, overspend {overspend} "
          f"(bound {bound}: {admitted} in flight x ({prompt + completion} used - {estimate} reserved))")
    assert overspend <= bound
    # Once spend is known, nothing more is admitted.
    assert post(budget, body(), key=key, headers=usage).status_code == 429


@contextlib.contextmanager
def two_gateways(budget, case):
    """A second gateway on the same Redis; yields it and `send(i)`, which alternates gateways
    and two keys of the limit's `case` and returns the status."""
    keys = [new_key(budget, case)[0] for _ in range(2)]
    with Stack(configs={"sluice.budget_enforcer": CONFIG}, redis_from=budget) as other:
        requests.post(other.url(CHAT), json=body(), headers=auth(DEMO_KEY), timeout=30)

        def send(i):
            gateway = budget if i % 2 else other
            return post(gateway, body(), key=keys[i // 2 % 2]).status_code

        yield other, send


def test_two_gateways_share_one_budget(budget):
    # A global limit of 50 requests, hit by two keys through two gateways on one Redis.
    with two_gateways(budget, "global") as (other, send):
        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            codes = list(pool.map(send, range(120)))
        assert codes.count(200) == 50
        assert codes.count(429) == 70
        assert counter(budget, "shared-global", "global", "all") == 50
        assert other.vm_failures() == []


# --- leases: room taken from Redis ahead, exactness kept ---------------------------------------

def checks(stack):
    return {source: stack.metric("sluice_budget_checks_total", source=source) for source in ("lease", "redis")}


def test_leases_keep_redis_off_the_request_path_and_give_unused_room_back(budget):
    key, alias = new_key(budget, "leased")
    usage = {"x-mock-prompt-tokens": "10", "x-mock-completion-tokens": "5"}
    before, sent = checks(budget), 600
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: post(budget, body(), key=key, headers=usage).status_code, range(sent)))
    assert codes.count(200) == sent, set(codes)
    after = checks(budget)
    redis, lease = after["redis"] - before["redis"], after["lease"] - before["lease"]
    print(f"\n{sent} requests, 8 at a time: {redis:.0f} checks in Redis, {lease:.0f} against leases "
          f"({redis / sent:.3f} callouts per request)")
    assert redis + lease == sent
    assert redis / sent <= 0.1, (redis, lease)
    # Once idle, the room no request used goes back: Redis holds exactly what was used.
    settled(budget, "leased", "key", alias, sent, "unused request room given back")
    settled(budget, "leased-tokens", "key", alias, sent * 15, "unused token room given back")
    wait_until(lambda: budget.redis("KEYS", f"{PREFIX}:resv:*") == "", "no reservation marker left", 10)


def test_leases_shrink_near_the_limit_and_admit_exactly_the_limit(budget):
    key, alias = new_key(budget, "edge")
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: post(budget, body(), key=key).status_code, range(450)))
    assert codes.count(200) == 400, codes.count(200)
    assert codes.count(429) == 50
    assert counter(budget, "leased-edge", "key", alias) == 400


def test_two_gateways_with_leases_share_one_budget_exactly(budget):
    # Each gateway's workers hold leases on one global counter. Nothing past the limit is ever
    # admitted; room a worker held when the others found the limit full comes back once idle
    # (`lease.idle_ms`), and is then admitted: in all, exactly the limit.
    with two_gateways(budget, "global-big") as (other, send):
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(send, range(700)))
        admitted = codes.count(200)
        assert codes.count(429) == 700 - admitted
        assert admitted <= 600, admitted
        time.sleep(3)  # past idle_ms: held room is back in Redis
        later = [send(i) for i in range(40)]
        assert admitted + later.count(200) == 600, (admitted, later)
        assert counter(budget, "shared-big", "global", "all") == 600
        assert other.vm_failures() == []


# --- the bridge goes away --------------------------------------------------------------------

def test_bridge_down_under_load_fails_open_and_loses_no_spend(budget):
    key, alias = new_key(budget, "spend")
    usage = {"x-mock-prompt-tokens": "10", "x-mock-completion-tokens": "5"}
    served, latencies, stop = [], [], time.time() + 4

    def load():
        while time.time() < stop:
            started = time.time()
            r = post(budget, body(), key=key, headers=usage)
            latencies.append(time.time() - started)
            served.append(r.status_code)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(load) for _ in range(8)]
        time.sleep(1)
        budget.stop_webdis()
        waiting = []
        for _ in range(15):
            time.sleep(0.1)
            waiting.append(budget.metric("sluice_budget_backlog_batches"))
        budget.start_webdis()
        for f in futures:
            f.result()
    assert set(served) == {200}, set(served)
    # No request waited much past the bridge timeout (250 ms) while it was down.
    assert max(latencies) < 1.0, max(latencies)
    assert budget.metric("sluice_budget_bridge_errors_total", op="check") > 0
    # Every served request is charged once the bridge is back: 15 tokens each.
    try:
        settled(budget, "spend", "key", alias, 15 * len(served), "backlog flushed to Redis")
    except TimeoutError:
        lines = [l for l in budget.access_log() if l.get("key") == alias]
        raise AssertionError(f"Redis holds {counter(budget, 'spend', 'key', alias)} tokens for {len(served)} requests "
                             f"({len(lines)} logged, {15 * len(served)} expected); "
                             f"{budget.envoy_log()[-3000:]}")
    # Reservation markers live only until their request is settled.
    wait_until(lambda: budget.redis("KEYS", f"{PREFIX}:resv:*") == "", "no reservation marker left", 10)
    # The backlog gauge showed the outage, and reads zero once every batch is in Redis (an
    # alert on it resolves).
    assert max(waiting) > 0, waiting
    wait_until(lambda: budget.metric("sluice_budget_backlog_batches") == 0, "the backlog gauge back at 0", 15)


def test_fail_closed_answers_503_fast():
    config = {**CONFIG, "on_bridge_failure": "closed"}
    with Stack(configs={"sluice.budget_enforcer": config}, concurrency=1) as s:
        key = "sk-closed"
        s.redis("SET", f"{PREFIX}:key:{key_entry(key, 'x')['sha256']}", json.dumps({"alias": "closed",
                                                                                   "metadata": {"case": "rpm"}}))
        assert post(s, body(), key=key).status_code == 200
        s.stop_webdis()
        started = time.time()
        r = post(s, body(), key=key)
        assert time.time() - started < 1.0
        assert r.status_code == 503
        assert error_of(r)["code"] == "budget_unavailable"
        assert s.vm_failures() == []


# --- configuration ----------------------------------------------------------------------------

# One case per module proves Envoy refuses the config and logs the field; every field's message
# is unit-tested in Rust (src/config.rs).
def test_bad_config_is_rejected_with_the_field_named():
    config = {"limits": [{"name": "x", "scope": "key", "kind": "requests", "window": "week", "limit": 1}]}
    assert_config_rejected("sluice.budget_enforcer", ".limits[0].window", config)
