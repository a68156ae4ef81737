"""One set of instruments per MeterProvider, shared by every Metrics layer reporting there.

The SDK hands back the first instrument when a name is registered twice on one meter, with the
first instrument's callback: a second ``Metrics`` creating its own ``llmguard.calls`` observable
would silently export nothing. So instruments are created once per provider, and their
callbacks iterate over every live ``Metrics`` layer of that provider (held weakly: a dropped
pipeline stops being reported, it is not kept alive by its metrics).
"""

from __future__ import annotations

import weakref
from operator import attrgetter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .series import Retired, Series
from .conventions import CHUNK_BUCKETS, DURATION_BUCKETS, FIRST_CHUNK_BUCKETS, SCOPE, TOKEN_BUCKETS

if TYPE_CHECKING:
    from .view import MetricsView

__all__ = ["Instruments", "aggregate_histograms", "instruments_for"]


class Instruments:
    """The synchronous histograms of one provider and the layers its observables read."""

    __slots__ = ("recording", "duration", "tokens", "first_chunk", "per_chunk", "wait",
                 "layers", "retired", "observables", "__weakref__")

    def __init__(self, meter: Any, histograms: Any = None) -> None:
        from opentelemetry import metrics

        from .instruments import observables

        # An explicit no-op provider records nothing, so the layers skip the calls. (The global
        # proxy must still be called: an SDK installed later turns its instruments real.)
        #: False for a no-op meter: histogram records would be thrown away.
        self.recording = not isinstance(meter, metrics.NoOpMeter)
        # The gateway's provider keeps its histograms in process (``aggregated``), not the SDK.
        histogram = meter.create_histogram if histograms is None else histograms.create_histogram
        self.duration = histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.tokens = histogram(
            "gen_ai.client.token.usage", unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
        self.first_chunk = histogram(
            "gen_ai.client.operation.time_to_first_chunk", unit="s",
            description="Time to receive the first chunk of a streamed answer",
            explicit_bucket_boundaries_advisory=FIRST_CHUNK_BUCKETS)
        self.per_chunk = histogram(
            "gen_ai.client.operation.time_per_output_chunk", unit="s",
            description="Time between consecutive chunks of a streamed answer",
            explicit_bucket_boundaries_advisory=CHUNK_BUCKETS)
        self.wait = histogram(
            "llmguard.admission.wait", unit="s",
            description="Time a call waited for admission (rate limit, concurrency slot)",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        #: Every live Metrics layer reporting to this provider.
        self.layers: weakref.WeakSet[MetricsView] = weakref.WeakSet()
        #: What dropped layers counted, by pipeline name.
        self.retired: dict[str | None, Retired] = {}
        self.observables = observables(self.sources, meter)

    def add(self, layer: MetricsView, series: Iterable[Series], counts: Mapping[str, int]) -> None:
        """Report ``layer``; when it is collected, keep its ``series`` and ``counts``."""
        self.layers.add(layer)
        weakref.finalize(layer, self._retire, layer.name, series, counts)

    def _retire(self, name: str | None, series: Iterable[Series], counts: Mapping[str, int]
                ) -> None:
        retired = self.retired.get(name)
        if retired is None:
            retired = self.retired[name] = Retired(name)
        retired.add(series, counts)

    def sources(self) -> list[Any]:
        """Everything the observables read: the live layers, then what dropped ones left."""
        return [*self.layers, *self.retired.values()]


class _GlobalInstruments(Instruments):
    """The global provider's instruments, through the API's proxy meter: until an SDK is set
    globally the proxy throws records away, so the layers skip them (about a microsecond a
    call); from the moment one is set they record again, as the proxy forwards them."""

    __slots__ = ("_proxy",)

    def __init__(self, meter: Any) -> None:
        super().__init__(meter)
        # An API whose proxy meter has no ``_real_meter`` is assumed to record (the records
        # are then merely no-ops): its own attribute stands in, the instruments themselves.
        self._proxy = meter if hasattr(meter, "_real_meter") else _Always(self)

    def _set(self, value: bool) -> None:
        pass  # Instruments.__init__ sets it; the proxy decides

    #: True once the API's proxy meter holds a real meter (set_meter_provider() ran): the
    #: proxy's ``_real_meter``, read by a C getter (no frame: every call of every layer reads
    #: it), truthy once set.
    recording = property(attrgetter("_proxy._real_meter"), _set)  # type: ignore[assignment]


class _Always:
    """A stand-in proxy whose real meter is always there."""

    __slots__ = ("_real_meter",)

    def __init__(self, meter: Any) -> None:
        self._real_meter = meter


_by_provider: weakref.WeakKeyDictionary[Any, Instruments] = weakref.WeakKeyDictionary()
#: Providers whose histograms are kept in process (``aggregated.prometheus_provider``).
_aggregated: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_unweakable: dict[int, tuple[Any, Instruments]] = {}
_global: list[Instruments] = []  # the global provider's (through the API's proxy), once created


def instruments_for(meter_provider: Any) -> Instruments:
    """The instruments of ``meter_provider`` (None: the global one), created on first use."""
    from opentelemetry import metrics

    if meter_provider is None:
        if not _global:
            _global.append(_GlobalInstruments(metrics.get_meter(SCOPE)))
        return _global[0]
    try:
        found = _by_provider.get(meter_provider)
    except TypeError:  # a provider that cannot be weakly referenced: keep it for good
        pair = _unweakable.get(id(meter_provider))
        if pair is None:
            pair = _unweakable[id(meter_provider)] = (
                meter_provider, Instruments(metrics.get_meter(SCOPE, meter_provider=meter_provider)))
        return pair[1]
    if found is None:
        found = _by_provider[meter_provider] = Instruments(
            metrics.get_meter(SCOPE, meter_provider=meter_provider),
            _aggregated.get(meter_provider))
    return found


def aggregate_histograms(meter_provider: Any, histograms: Any) -> None:
    """Make the histograms of Metrics layers on ``meter_provider`` those of ``histograms``
    (an ``aggregated.Histograms``, whose reader exports them): before any layer reports there."""
    _aggregated[meter_provider] = histograms
