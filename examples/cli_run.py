"""`llmguard run` from Python: the 200 example prompts through the stack on the offline fake model.

The same as `llmguard run examples/prompts.jsonl -o out.jsonl` in a shell; then a look at the
first output record.
"""

import json
import tempfile
from pathlib import Path

from llmguard.cli import main

prompts = Path(__file__).with_name("prompts.jsonl")
out = Path(tempfile.mkdtemp()) / "out.jsonl"
code = main(["run", str(prompts), "-o", str(out), "--retries", "2", "--timeout", "10"])
first = json.loads(out.read_text().splitlines()[0])
print(f"exit code {code}; first record: id={first['id']} model={first['model']} "
      f"reply={first['response']['choices'][0]['message']['content']!r}")
