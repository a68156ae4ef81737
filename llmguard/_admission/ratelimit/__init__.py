"""RateLimit: request and token quotas paced like the provider's own limiter.

``layer`` (the layer), ``line`` (the waiting line, in the fair order), ``window`` and ``bucket``
(the quota arithmetic; ``told``: how high a reading lets a bucket give back), ``quotas`` and
``headers`` (settings and what providers say), ``backend`` (where the state lives), ``stats`` (what
``statistics()`` returns), ``split`` and ``split_backend`` (input and output token quotas apart).
"""
