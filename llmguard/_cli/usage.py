"""The text of ``llmguard run --help``: what it does, its records, exit codes, durability."""

from __future__ import annotations

__all__ = ["DESCRIPTION", "EPILOG"]

DESCRIPTION = """\
Send every line of INPUT (JSON Lines) as a chat completion through llmguard's layers
(cache, fallback, retry, timeout, rate limit, concurrency) and write one JSON record per line to
OUTPUT, in input order.

Input lines are OpenAI-style chat requests {"model": ..., "messages": [...], ...} or Batch API
lines {"custom_id": ..., "body": {...}}. A line that is not JSON or has no messages becomes an
error record with its line number; the run goes on.

Models: "fake" (the default when neither --model nor the line names one) answers offline. Test
models: "fake-fail" (always HTTP 500), "fake-429" (always HTTP 429), "fake-hang" (never answers).
Any other model goes to --api-base (an OpenAI-compatible server) when given, else through
litellm (pip install 'llmguard[litellm]') with its usual API keys.
"""

EPILOG = """\
output record (one JSON object per line):
  id, line, ok, model (the one that answered), deployment (the one that answered, with
  several --api-base or --config; else null), response | error {kind, type, message},
  usage {input_tokens, output_tokens}, cost (USD, when litellm or --price knows the price),
  latency (s),
  attempts, retries, fallback, cached, metadata (echoed from the input line)

exit codes:
  0    every line succeeded
  1    the run finished and some lines failed (see their error records)
  1    also: --resume left failed records of an earlier run (add --retry-failed)
  2    usage or input error (bad option, missing input file, output exists without --resume,
       duplicate ids, unwritable output or a full disk)
  3    crashed (a bug: the traceback says where; --resume continues)
  4    stopped at --max-cost: the next line could pass the cap; the lines not sent are not
       recorded, and --resume with a new --max-cost continues them
  130  interrupted (Ctrl-C or SIGTERM); the message says how to resume

durability:
  each record is written and flushed the moment its line finishes (a kill -9 loses no
  answered line; fsynced within 1 s); a completed run leaves OUTPUT in input order.
  Ctrl-C/SIGTERM sends nothing more, gives lines at the provider --grace seconds; a second
  Ctrl-C abandons them. --resume then re-sends only the lines that were in flight.

example:
  llmguard run examples/prompts.jsonl -o out.jsonl --rpm 500 --tpm 200000 \\
      --fallback-model fake --retries 4
"""
