"""A gateway job at half price: ``POST /v1/jobs?mode=batch`` through a provider batch API.

Offline: ``llmguard.testing.BatchAPIServer`` plays OpenAI's Batch API (files, batches, their
lifecycle, some lines expiring) on a loopback port, and ``llmguard serve`` sends the job's lines
there as a batch. Against the real API, point ``base_url`` at https://api.openai.com/v1 and set
``api_key_env``.
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from llmguard.testing import BatchAPIServer, BatchTimings

CONFIG = """
[models.gpt-mini]
provider = "openai"
base_url = "{url}"
model = "gpt-4o-mini"
price_input = 0.15
price_output = 0.60

[jobs]
batch_poll = 0.05
"""


def main() -> None:
    server = BatchAPIServer(expire_rate=0.05, timings=BatchTimings(per_request=0.002))
    with server.in_thread(), tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "serve.toml"
        config.write_text(CONFIG.format(url=server.base_url))
        gateway = subprocess.Popen([sys.executable, "-m", "llmguard", "serve", "--config",
                                    str(config), "--port", "0"], stdout=subprocess.PIPE, text=True)
        try:
            url = re.search(r"http://[\d.]+:\d+", gateway.stdout.readline()).group(0)
            lines = [{"custom_id": f"q{i}", "body": {"model": "gpt-mini", "max_tokens": 20,
                      "messages": [{"role": "user", "content": f"Say {i}."}]}} for i in range(50)]
            with httpx.Client(base_url=url, timeout=60) as http:
                job = http.post("/v1/jobs", params={"mode": "batch"},
                                content="\n".join(json.dumps(x) for x in lines),
                                headers={"content-type": "application/jsonl"}).json()
                print("submitted", job["id"], job["status"], job["mode"])
                while job["status"] not in ("completed", "failed", "cancelled"):
                    job = http.get(f"/v1/jobs/{job['id']}", params={"wait": 10}).json()
                    print(f"  {job['status']}: provider finished {job['batch']['provider_finished']}"
                          f", recorded {job['counts']['done']}/{job['counts']['total']}")
                records = [json.loads(x) for x in
                           http.get(f"/v1/jobs/{job['id']}/results").text.splitlines()]
            cost = sum(r["cost"] or 0 for r in records)
            print(f"{sum(r['ok'] for r in records)} of {len(records)} answered, in input order "
                  f"({records[0]['id']}..{records[-1]['id']}); {len(server.batches)} batches "
                  f"(expired lines went in a second); ${cost:.6f} at batch prices")
        finally:
            gateway.terminate()
            gateway.wait(30)


if __name__ == "__main__":
    main()
