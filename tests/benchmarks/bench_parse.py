"""Benchmark `wfdash.collect.promtext` against prometheus_client's text parser.

    python tests/benchmarks/bench_parse.py [--iterations 100] [--rounds 7]

For a busy vLLM replica's payload (~50 KB) and a llama-server one, prints the mean time
of one parse by each parser and the ratio, all measured in this run. The filter-parser is
timed twice: "warm", the steady state where every line was seen at an earlier scrape (its
line memory and label cache hit: a replica whose counters did not move), and "cold", where
every payload carries lines and label sets never seen before (each one names another
model): a replica whose every line changed. A script, not a test: pytest collects `test_*.py`.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence

from prometheus_client.parser import text_string_to_metric_families

from wfdash.collect.dialects import WANTED_FAMILIES
from wfdash.collect.promtext import parse_exposition
from wfdash.sandbox.exposition import (
    FINISH_REASONS,
    LlamaCppCounters,
    VllmCounters,
    render_llamacpp_metrics,
    render_vllm_metrics,
)

# What the scraper asks for: both dialects' families at once.
FAMILIES = WANTED_FAMILIES


def busy_vllm_replica(seed: int = 0, requests: int = 5000) -> VllmCounters:
    rng = random.Random(seed)
    m = VllmCounters(created=1.7e9)
    for _ in range(requests):
        m.finished[rng.choice(FINISH_REASONS)] += 1
        m.ttft.observe(rng.lognormvariate(-1, 1.5))
        m.inter_token_latency.observe(rng.lognormvariate(-3, 0.5))
        m.request_time_per_output_token.observe(rng.lognormvariate(-3, 0.5))
        for hist in (
            m.e2e_latency,
            m.queue_time,
            m.inference_time,
            m.prefill_time,
            m.decode_time,
            m.http_duration,
        ):
            hist.observe(rng.lognormvariate(1, 1.5))
        m.time_per_prefill_token.observe(rng.random() / 100)
        for hist in (
            m.prompt_tokens_per_request,
            m.generation_tokens_per_request,
            m.max_tokens_param,
            m.max_num_generation_tokens,
            m.iteration_tokens,
        ):
            hist.observe(rng.randint(1, 4000))
        m.params_n.observe(1)
    m.prompt_tokens = 3_500_000
    m.generation_tokens = 1_234_567
    m.num_requests_running = 3
    m.kv_cache_usage = 0.42
    return m


def mean_us(parse: Callable[[str], object], passes: Sequence[Sequence[str]]) -> float:
    """Mean µs per call in the fastest of the timed passes, each over its own bodies.

    As with `timeit`, the fastest pass is the one the rest of the machine disturbed least.
    """
    for body in passes[0]:
        parse(body)  # warm up (and, for the cold runs, the reason pass 0 is not timed)
    times = []
    for bodies in passes[1:]:
        start = time.perf_counter()
        for body in bodies:
            parse(body)
        times.append((time.perf_counter() - start) / len(bodies) * 1e6)
    return min(times)


def parse_fast(body: str) -> object:
    return parse_exposition(body, FAMILIES)


def parse_reference(body: str) -> object:
    return list(text_string_to_metric_families(body))


def bench(title: str, body: str, cold: Sequence[Sequence[str]], iterations: int) -> None:
    """Time one body over and over, and `cold`: passes of bodies never parsed before."""
    wanted = sum(map(len, parse_exposition(body, FAMILIES).samples.values()))
    fast_warm = mean_us(parse_fast, [[body] * iterations] * len(cold))
    fast_cold = mean_us(parse_fast, cold)
    reference = mean_us(parse_reference, [[body] * max(iterations // 10, 3)] * len(cold))
    print(
        f"{title:<24} {len(body.encode()):>7,} B {body.count(chr(10)):>5} lines "
        f"{wanted:>4} wanted | promtext warm {fast_warm:8.1f} µs  cold {fast_cold:8.1f} µs | "
        f"prometheus_client {reference:9.1f} µs | "
        f"{reference / fast_warm:5.1f}x warm, {reference / fast_cold:5.1f}x cold"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    replica = busy_vllm_replica()
    bench(
        "vLLM 0.11, busy replica",
        render_vllm_metrics(replica),
        [
            [render_vllm_metrics(replica, f"org/model-{r}-{i}") for i in range(args.iterations)]
            for r in range(args.rounds + 1)
        ],
        args.iterations,
    )
    llamacpp = render_llamacpp_metrics(
        LlamaCppCounters(
            prompt_tokens_total=1_234_567,
            prompt_seconds_total=93_880.2,
            tokens_predicted_total=456_789,
            tokens_predicted_seconds_total=36_250.1,
            n_decode_total=470_000,
            n_busy_slots_per_decode=1.7,
            kv_cache_usage_ratio=0.31,
            kv_cache_tokens=1270,
            requests_processing=1,
            requests_deferred=4,
        )
    )
    # No labels: nothing to cache, so "cold" is the same body again.
    bench(
        "llama.cpp b3920",
        llamacpp,
        [[llamacpp] * args.iterations] * (args.rounds + 1),
        args.iterations,
    )


if __name__ == "__main__":
    main()
