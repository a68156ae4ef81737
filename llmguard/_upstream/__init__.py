"""_upstream: private; where requests go (the offline fake, OpenAI-compatible HTTP, litellm)
behind one :class:`~llmguard._upstream.protocol.Upstream` protocol, and the provider batch APIs
(``batches/``). The applications (``llmguard run``, ``llmguard serve``, Ray) talk to providers
through it, and share here what a config file says of upstreams (``config``) and of a model's
deployments with their quotas and the Router over them (``deployments``); ``llmguard.testing``
re-exports the fake."""
