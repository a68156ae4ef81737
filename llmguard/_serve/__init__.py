"""``llmguard serve``: an OpenAI-compatible HTTP gateway that runs every request through llmguard.

Loaded only when the ``serve`` command runs (``import llmguard`` never imports starlette or
uvicorn). The parts, one concern per module:

* ``config``: the TOML file, validated at start (errors name the key and its line);
* ``tenants``: API keys (sha256 at rest), per-tenant quotas that answer 429 like a provider,
  priorities and usage accounting;
* the models' upstreams come from ``llmguard._upstream`` (the offline fake, litellm, an
  OpenAI-compatible base URL);
* ``gateway``: the per-model pipelines and one request's path through tenant and model layers;
* ``errors`` / ``sse``: OpenAI-shaped error bodies and server-sent events;
* ``app``: the Starlette routes; ``server``: uvicorn, workers and graceful shutdown.

Layers are reached through public llmguard names (``import llmguard as lg``), providers
through ``_upstream``.
"""
