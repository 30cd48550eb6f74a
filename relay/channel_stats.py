"""What this relay process has seen of each channel lately: exponentially weighted moving averages
of time to first output, error rate and output speed, from the same attempt outcomes passive
health judges (relay/health.py `effect_of`).

Latency- and cost-aware selection (relay/selector.py) and the caller's `provider.sort` read them.
They live in memory, per process, and are fed by the router (each attempt's time to first output
and its outcome) and by each finished request (its output speed): no Redis round trip, no lock
(the relay is one gevent thread per process). Every process sees its own share of the traffic,
which is a fair sample of every channel it routes to.
"""
from __future__ import annotations

from dataclasses import dataclass

ALPHA = 0.2  # the newest sample's share of the average: about the last ten samples count
MIN_STREAM_MS = 50  # shorter generations say nothing about speed


@dataclass(slots=True)
class Averages:
    ttft_ms: float | None = None  # successful attempts: time to the first output (a whole answer's time when not streamed)
    error_rate: float = 0.0  # 0..1 over attempts the channel could be blamed for
    tokens_per_second: float | None = None  # streamed output after the first token
    samples: int = 0


def _blend(old: float | None, new: float) -> float:
    return new if old is None else old + ALPHA * (new - old)


class ChannelStats:
    def __init__(self) -> None:
        self.by_channel: dict[int, Averages] = {}

    def _of(self, channel_id: int) -> Averages:
        found = self.by_channel.get(channel_id)
        if found is None:
            found = self.by_channel[channel_id] = Averages()
        return found

    def answered(self, channel_id: int, ttft_ms: float) -> None:
        a = self._of(channel_id)
        a.ttft_ms = _blend(a.ttft_ms, max(1.0, ttft_ms))
        a.error_rate = _blend(a.error_rate, 0.0)
        a.samples += 1

    def failed(self, channel_id: int) -> None:
        a = self._of(channel_id)
        a.error_rate = _blend(a.error_rate, 1.0)
        a.samples += 1

    def streamed(self, channel_id: int, output_tokens: int, generation_ms: int) -> None:
        if output_tokens > 0 and generation_ms >= MIN_STREAM_MS:
            a = self._of(channel_id)
            a.tokens_per_second = _blend(a.tokens_per_second, output_tokens * 1000 / generation_ms)

    def get(self, channel_id: int) -> Averages | None:
        return self.by_channel.get(channel_id)

    def forget(self) -> None:
        self.by_channel.clear()


STATS = ChannelStats()  # the process's, like relay/telemetry.py's TELEMETRY
