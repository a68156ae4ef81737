"""Metrics offline: GenAI-convention metrics through the OpenTelemetry SDK, plus in-process stats.

A pipeline with Metrics and a concurrency limit answers 20 calls from a FakeLLM (3 of them
fail); the SDK's InMemoryMetricReader collects what a Prometheus scrape or an OTLP export would
see, and ``stats()`` shows the in-process view (no SDK needed for that part).
"""

import asyncio

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import llmguard as lg
from llmguard.testing import FakeLLM


async def main() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])  # in production: lg.serve_metrics()
    fake = FakeLLM([ConnectionError("reset")] * 3, latency=0.02)
    pipeline = lg.Pipeline(lg.Metrics(meter_provider=provider, provider="openai"),
                           lg.ConcurrencyLimit(4), name="chat")
    complete = pipeline.wrap(fake.acompletion)

    async def ask(i: int) -> None:
        try:
            await complete(model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{i}"}])
        except ConnectionError:
            pass

    await asyncio.gather(*(ask(i) for i in range(20)))

    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attrs = {k.removeprefix("gen_ai.").removeprefix("llmguard."): v
                             for k, v in point.attributes.items()
                             if k not in ("gen_ai.operation.name", "llmguard.pipeline")}
                    value = getattr(point, "value", None)
                    shown = value if value is not None else f"count={point.count} sum={point.sum:.3f}"
                    print(f"{metric.name:34} {metric.unit:8} {shown!s:24} {attrs}")

    stats = complete.stats()["metrics"]
    print(f"\nstats(): {stats.calls} calls, {stats.successes} ok, {stats.failures} failed, "
          f"p50={stats.latency_p50:.3f}s p99={stats.latency_p99:.3f}s, "
          f"tokens in/out {stats.input_tokens}/{stats.output_tokens}, errors {stats.errors}")


if __name__ == "__main__":
    asyncio.run(main())
