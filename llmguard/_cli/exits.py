"""``llmguard run``'s exit codes (documented in ``llmguard run --help``)."""

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CRASH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
#: Stopped at --max-cost with lines not sent (--resume with a new --max-cost continues them).
EXIT_BUDGET = 4
