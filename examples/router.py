"""One model, three deployments, offline: a Router sends each call to a deployment with quota
to spare, never over any deployment's quota, and moves a call to another deployment when one
fails. Simulated token-bucket servers; virtual time (looptime) makes the two minutes instant."""

import asyncio
import collections

import looptime

import llmguard as lg
from llmguard.testing import Overloaded, TokenBucketServer

MESSAGES = [{"role": "user", "content": "hello"}]


async def main() -> None:
    eu, us, reseller = (TokenBucketServer(rpm=rpm, latency=1.0) for rpm in (60, 120, 300))

    async def flaky_us(**kwargs):  # the US deployment fails its first 10 seconds
        if asyncio.get_running_loop().time() < 10:
            raise Overloaded("down for maintenance", status_code=503, headers={})
        return await us.acompletion(**kwargs)

    router = lg.Router(
        lg.Deployment(eu.acompletion, name="eu", rpm=60, refill="continuous"),
        lg.Deployment(flaky_us, name="us", rpm=120, refill="continuous"),
        lg.Deployment(reseller.acompletion, name="reseller", rpm=300, refill="continuous"),
    )
    chat = lg.Pipeline(name="chat").retry(attempts=4).then(router).wrap(eu.acompletion)

    answered_by: collections.Counter[str] = collections.Counter()
    with lg.recording() as records:
        await asyncio.gather(*(chat(model="gpt-4o", messages=MESSAGES) for _ in range(960)))
    answered_by.update(record.deployment for record in records)
    minutes = asyncio.get_running_loop().time() / 60
    print(f"960 calls in {minutes:.2f} virtual minutes (the summed quota allows 480 at once, "
          f"then 480 a minute)")
    print("answered by:", dict(answered_by))
    print("429s at the servers:", sum(s.statistics().rate_limited for s in (eu, us, reseller)))
    stats = router.statistics()
    print(f"moved to another deployment: {stats.failovers}; "
          f"us: {stats.deployments['us'].failed} failed, circuit {stats.deployments['us'].circuit}")


if __name__ == "__main__":
    loop = looptime.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
