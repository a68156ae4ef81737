"""_upstream: private; where requests go (the offline fake, OpenAI-compatible HTTP, litellm)
behind one :class:`~llmguard._upstream.protocol.Upstream` protocol, and the provider batch APIs
(``batches/``). The applications (``llmguard run``, ``llmguard serve``, Ray) talk to providers
through it; ``llmguard.testing`` re-exports the fake."""
