"""Config validation: each mistake names the key and its line; the command exits 2 on it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from serve_helpers import HANG_GUARD, ROOT, write_config

from llmguard._serve.config import ConfigError, load
from llmguard._serve.gateway import Gateway

GOOD_HASH = "a" * 64

#: (case, file text, what the message must contain)
CASES = [
    ("unknown key with a suggestion", "[models.fake]\nlatency = 0\nrmp = 5\n",
     ["models.fake.rmp", "line 3", "did you mean 'rpm'"]),
    ("wrong type", "[models.fake]\n\nrpm = \"many\"\n", ["models.fake.rpm", "line 3", "integer"]),
    ("negative timeout", "[models.m]\ntimeout = -1\n", ["models.m.timeout", "line 2", "> 0"]),
    ("unknown provider", "[models.m]\nprovider = \"azure\"\n",
     ["models.m.provider", "line 2", "'fake', 'litellm', 'openai'"]),
    ("openai without base_url", "[models.m]\nprovider = \"openai\"\n",
     ["models.m", "line 1", "base_url"]),
    ("fallback to unknown model", "[models.a]\nfallbacks = [\"b\"]\n",
     ["models.a.fallbacks", "line 2", "'b'"]),
    ("fallback loop", "[models.a]\nfallbacks = [\"b\"]\n[models.b]\nfallbacks = [\"a\"]\n",
     ["fallbacks loop", "a -> b -> a"]),
    ("adaptive and concurrency", "[models.a]\nadaptive = true\nconcurrency = 3\n",
     ["models.a.adaptive", "line 2"]),
    ("tenant without key", "[tenants.t]\nrpm = 3\n", ["tenants.t", "line 1", "api_key_sha256"]),
    ("plaintext key", "[tenants.t]\napi_key_sha256 = \"sk-live-123\"\n",
     ["tenants.t.api_key_sha256", "line 2", "sha256 hex digest"]),
    ("tenant model unknown", f"[tenants.t]\napi_key_sha256 = \"{GOOD_HASH}\"\nmodels = [\"x\"]\n",
     ["tenants.t.models", "line 3", "'x'"]),
    ("bad priority", f"[tenants.t]\napi_key_sha256 = \"{GOOD_HASH}\"\npriority = \"urgent\"\n",
     ["tenants.t.priority", "line 3", "'high'"]),
    ("max below default", f"[tenants.t]\napi_key_sha256 = \"{GOOD_HASH}\"\npriority = \"high\"\n"
     "max_priority = \"low\"\n", ["tenants.t.max_priority", "line 4"]),
    ("unknown table", "[modles.a]\n", ["modles", "line 1", "unknown table"]),
    ("server key", "[server]\ngrace = \"soon\"\n", ["server.grace", "line 2"]),
    ("not TOML", "[models.a\nrpm = 1\n", ["not valid TOML", "line 1"]),
    ("enqueued tokens without a batch API", "[models.a]\nbatch_enqueued_tokens = 100\n",
     ["models.a.batch_enqueued_tokens", "line 2", 'provider = "openai"']),
    ("enqueued tokens zero", '[models.a]\nprovider = "openai"\nbase_url = "http://x/v1"\n'
     "batch_enqueued_tokens = 0\n", ["models.a.batch_enqueued_tokens", "line 4"]),
]


@pytest.mark.parametrize(("case", "text", "needles"), CASES, ids=[c[0] for c in CASES])
def test_config_errors_name_key_and_line(tmp_path, case, text, needles) -> None:
    with pytest.raises(ConfigError) as info:
        load(str(write_config(tmp_path, text)))
    for needle in needles:
        assert needle in str(info.value)


def test_missing_env_key_and_shared_keys_are_errors(tmp_path, monkeypatch) -> None:
    """api_key_env must be set; two tenants cannot share a key."""
    monkeypatch.delenv("SERVE_TEST_UNSET", raising=False)
    config = load(str(write_config(tmp_path, "[tenants.t]\napi_key_env = \"SERVE_TEST_UNSET\"\n")))
    with pytest.raises(ConfigError, match="tenants.t.api_key_env.*SERVE_TEST_UNSET"):
        Gateway(config)
    twice = f"[tenants.a]\napi_key_sha256 = \"{GOOD_HASH}\"\n[tenants.b]\napi_key_sha256 = " \
            f"\"{GOOD_HASH}\"\n"
    with pytest.raises(ConfigError, match="tenants.b.*tenant a's"):
        Gateway(load(str(write_config(tmp_path, twice))))


def test_a_full_config_loads(tmp_path) -> None:
    config = load(str(write_config(tmp_path, f"""
[server]
grace = 3
[models.main]
provider = "litellm"
model = "openai/gpt-4o-mini"
rpm = 500
tpm = 200000
adaptive = true
retries = 3
timeout = 30
fallbacks = ["backup"]
cache_ttl = 60
circuit_breaker = true
price_input = 0.15
price_output = 0.6
[models.backup]
[tenants.t]
api_key_sha256 = ["{GOOD_HASH}", "{'b' * 64}"]
priority = "low"
""")))
    assert config.grace == 3 and config.models["main"].stack.fallbacks == ("backup",)
    assert config.tenants["t"].key_hashes == (GOOD_HASH, "b" * 64)
    gateway = Gateway(config)
    assert gateway.tenants.authenticate("anything") is None


def _serve(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmguard", "serve", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, input=stdin,
                          capture_output=True, text=True, timeout=HANG_GUARD)


@pytest.mark.looptime(False)
def test_command_exits_2_naming_the_key(tmp_path) -> None:
    """`llmguard serve --config bad.toml`: exit 2, one line naming the key and the line."""
    path = write_config(tmp_path, "[models.fake]\nconcurrency = 0\n")
    result = _serve("--config", str(path))
    assert result.returncode == 2
    assert "models.fake.concurrency" in result.stderr and "line 2" in result.stderr
    missing = _serve("--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "cannot read config" in missing.stderr
    assert _serve("--port", "70000").returncode == 2


@pytest.mark.looptime(False)
def test_hash_key_reads_stdin_and_prints_only_the_digest() -> None:
    import hashlib

    result = _serve("--hash-key", stdin="my-secret-key\n")
    assert result.returncode == 0
    assert result.stdout.strip() == hashlib.sha256(b"my-secret-key").hexdigest()
    assert "my-secret-key" not in result.stdout + result.stderr


def test_input_and_output_token_quotas_of_a_model(tmp_path) -> None:
    """``input_tpm``/``output_tpm`` (Anthropic's ITPM/OTPM) give the model's RateLimit input and
    output token quotas apart; a bad value names its key and line."""
    config = load(str(write_config(tmp_path, """
[models.claude]
rpm = 50
input_tpm = 30000
output_tpm = 8000
""")))
    gateway = Gateway(config)
    [limit] = [layer for layer in gateway.models["claude"].guarded.pipeline.layers
               if type(layer).__name__ == "RateLimit"]
    assert [(q.part, q.limit) for q in limit.quotas] == [
        ("", 50), ("input", 30_000), ("output", 8_000)]
    with pytest.raises(ConfigError, match=r"line 3: models.claude.output_tpm"):
        load(str(write_config(tmp_path, "[models.claude]\ninput_tpm = 1\noutput_tpm = -1\n")))
