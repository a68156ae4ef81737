"""Background jobs over HTTP: ``/v1/jobs`` (submit, poll, long-poll, SSE, results, cancel), signed
webhooks, the ``/v1/ws`` WebSocket and the ``/jobs`` status page.

* ``records``: the request body (a JSON list or ``llmguard run``'s JSONL input) to lines, and a
  line's outcome to ``llmguard run``'s output record;
* ``store`` / ``redis_store``: job state (``llmguard._runners.jobstate.Progress``), the lines,
  their records, the events and the work queue, in this process or in Redis (shared by
  replicas: a Streams consumer group, reclaim of a dead replica's pending lines);
* ``worker``: takes lines off the queue and runs them through the gateway (tenant quota first);
* ``webhooks``: signed delivery with retries, and the SSRF check of callback URLs;
* ``routes`` / ``ws`` / ``page``: the HTTP, WebSocket and HTML surfaces.
"""
