"""The gateway serving one model over several deployments ([[models.NAME.deployments]]): the
config's checks, and the real gateway routing by headroom, never a deployment over its quota,
moving a request off a failing deployment."""

from __future__ import annotations

import httpx
import pytest
from serve_helpers import MESSAGES, served, write_config

from llmguard._serve.config import ConfigError, load

DEPLOYED = """
[models.gpt4o]
retries = 0
max_wait = 5
[[models.gpt4o.deployments]]
name = "eu"
rpm = 3
[[models.gpt4o.deployments]]
name = "us"
rpm = 5
[[models.gpt4o.deployments]]
name = "down"
fail_status = 503
"""

BAD = [
    ("name twice", "[models.m]\n[[models.m.deployments]]\nname = \"a\"\n"
     "[[models.m.deployments]]\nname = \"a\"\n", ["models.m.deployments.1.name", "twice"]),
    ("no name", "[models.m]\n[[models.m.deployments]]\nrpm = 3\n",
     ["models.m.deployments.0", "needs a name"]),
    ("model-level quota", "[models.m]\nrpm = 3\n[[models.m.deployments]]\nname = \"a\"\n",
     ["models.m.rpm", "line 2", "each [[models.NAME.deployments]]"]),
    ("openai without base_url", "[models.m]\n[[models.m.deployments]]\nname = \"a\"\n"
     "provider = \"openai\"\n", ["models.m.deployments.0", "base_url"]),
    ("unknown key", "[models.m]\n[[models.m.deployments]]\nname = \"a\"\nrmp = 3\n",
     ["models.m.deployments.0.rmp", "did you mean 'rpm'"]),
    ("unknown strategy", "[models.m]\nstrategy = \"fastest\"\n", ["models.m.strategy", "'ordered'"]),
    ("model-level output_tpm", "[models.m]\noutput_tpm = 8\n[[models.m.deployments]]\nname = "
     "\"a\"\n", ["models.m.output_tpm", "each [[models.NAME.deployments]]"]),
    ("unknown key, its line", "[models.m]\n[[models.m.deployments]]\nname = \"a\"\n"
     "[[models.m.deployments]]\nname = \"b\"\nrmp = 3\n", ["deployments.1.rmp", "line 6"]),
]


def test_deployment_input_and_output_quotas_reach_the_router(tmp_path) -> None:
    """``input_tpm``/``output_tpm`` (and ``burst``) of a deployment in the TOML become that
    deployment's input and output token quotas in the gateway's Router."""
    from llmguard._upstream.deployments import router_of

    config = load(str(write_config(tmp_path, """
[models.claude]
[[models.claude.deployments]]
name = "anthropic"
input_tpm = 40000
output_tpm = 8000
burst = 0.1
""")))
    (deployment,) = router_of(config.models["claude"].deployments, "headroom", 5, None).deployments
    assert deployment.split
    assert {(q.part, q.limit) for q in deployment.quotas} == {
        ("input", 40000), ("output", 8000), ("input", 4000), ("output", 800)}


@pytest.mark.parametrize(("case", "text", "needles"), BAD, ids=[c[0] for c in BAD])
def test_deployment_config_errors_name_the_key(tmp_path, case, text, needles) -> None:
    with pytest.raises(ConfigError) as info:
        load(str(write_config(tmp_path, text)))
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


@pytest.mark.looptime(False)
def test_gateway_routes_one_model_over_its_deployments(tmp_path) -> None:
    """8 requests at once to a model of three deployments (3 RPM, 5 RPM, one answering 503):
    every request answered, each deployment sent at most its quota, the failing one's
    attempts moved; the metrics name the deployment that answered."""
    with served(write_config(tmp_path, DEPLOYED)) as server:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            answers = [http.post("/v1/chat/completions",
                                 json={"model": "gpt4o", "messages": MESSAGES})
                       for _ in range(8)]
            metrics = http.get("/metrics").text
        router = next(layer for layer in server.gateway.models["gpt4o"].layers
                      if type(layer).__name__ == "Router")
    assert [a.status_code for a in answers] == [200] * 8
    stats = router.statistics().deployments
    assert (stats["eu"].succeeded, stats["us"].succeeded) == (3, 5)
    assert stats["down"].succeeded == 0 and stats["down"].moved_away == stats["down"].failed
    assert 'llmguard_deployment="eu"' in metrics and 'llmguard_deployment="us"' in metrics


ROUTED = """
[models.gpt4o]
retries = 0
max_wait = 2
[[models.gpt4o.deployments]]
name = "eu"
rpm = 3
latency = 0.0
[[models.gpt4o.deployments]]
name = "us"
rpm = 5
latency = 0.0
"""


@pytest.mark.looptime(False)
async def test_two_gateways_on_redis_route_against_the_same_deployment_quotas(
        tmp_path, redis_url, redis_prefix) -> None:
    """Two `llmguard serve --redis` processes, 16 requests spread over them, one model over
    deployments of 3 and 5 RPM: exactly 8 answered in all (both quotas, never more), the rest
    refused after waiting for room."""
    import asyncio

    from serve_helpers import HANG_GUARD, ChildServer

    config = write_config(tmp_path, ROUTED)
    args = ("--config", str(config), "--redis", redis_url, "--redis-prefix", redis_prefix)
    with ChildServer(*args) as one, ChildServer(*args) as two:
        async with httpx.AsyncClient(timeout=HANG_GUARD) as http:
            responses = await asyncio.gather(*(
                http.post((one, two)[i % 2].url + "/v1/chat/completions",
                          json={"model": "gpt4o", "messages": MESSAGES})
                for i in range(16)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 8, statuses
    assert all(status != 500 for status in statuses), statuses
