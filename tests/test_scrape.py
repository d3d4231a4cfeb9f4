"""Scraper against real loopback listeners that misbehave: one bad replica never hurts others."""

from __future__ import annotations

import gzip
import socket
import time

import httpx

from tests import fault_server as fs
from wfdash.collect.kinds import ScrapeError
from wfdash.collect.scrape import Scraper, metrics_url

GOOD = b"llamacpp:prompt_tokens_total 10\n"


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/metrics"


async def test_good_replica_body_latency_and_bytes() -> None:
    scraper = Scraper(timeout=2)
    async with fs.serve(fs.respond(GOOD)) as base:
        result = await scraper.scrape(base + "/metrics")
    await scraper.aclose()
    assert result.ok and result.body == GOOD
    assert result.nbytes == len(GOOD) and result.status_code == 200
    assert 0 <= result.latency_s < 2


async def test_each_failure_gets_its_own_reason_and_does_not_delay_the_rest() -> None:
    scraper = Scraper(timeout=0.6, max_bytes=256 * 1024)
    async with (
        fs.serve(fs.respond(GOOD)) as good,
        fs.serve(fs.hang()) as hung,
        fs.serve(fs.drip(GOOD * 10, every=0.1)) as slow,
        fs.serve(fs.respond(b"oops", status="500 Internal Server Error")) as broken,
        fs.serve(fs.close_early()) as closer,
        fs.serve(fs.endless_chunks()) as huge,
        fs.serve(fs.respond(b"x" * 300_000)) as declared_huge,
    ):
        urls = [good, hung, slow, broken, closer, huge, declared_huge]
        started = time.perf_counter()
        results = await scraper.scrape_all([u + "/metrics" for u in urls] + [_closed_port(), None])
        elapsed = time.perf_counter() - started
    await scraper.aclose()
    kinds = [r.error for r in results]
    assert kinds == [
        None,
        ScrapeError.TIMEOUT,
        ScrapeError.TIMEOUT,  # dripping a byte at a time still hits the overall deadline
        ScrapeError.HTTP,
        ScrapeError.NETWORK,
        ScrapeError.TOO_LARGE,
        ScrapeError.TOO_LARGE,
        ScrapeError.REFUSED,
        ScrapeError.NO_ENDPOINT,
    ]
    assert results[0].body == GOOD
    assert results[3].status_code == 500 and "500" in results[3].detail
    # All in parallel: the whole batch takes about one timeout, not the sum.
    assert elapsed < 0.6 * 3


async def test_bearer_token_is_sent_and_never_in_errors() -> None:
    seen: list[dict[str, str]] = []
    scraper = Scraper(token="s3cr3t-token-value")
    async with fs.serve(fs.respond(GOOD), seen_headers=seen) as base:
        await scraper.scrape(base + "/metrics")
    refused = await scraper.scrape(_closed_port())
    await scraper.aclose()
    assert seen[0]["authorization"] == "Bearer s3cr3t-token-value"
    assert "s3cr3t" not in refused.detail


async def test_connections_are_reused_across_cycles() -> None:
    accepted: list[int] = []
    scraper = Scraper()
    async with fs.serve(fs.respond(GOOD), accepted=accepted) as base:
        for _ in range(5):
            assert (await scraper.scrape(base + "/metrics")).ok
    await scraper.aclose()
    assert len(accepted) == 1


async def test_requests_are_what_an_httpx_client_sends() -> None:
    """Scrapes skip httpx.AsyncClient's per-request machinery: the request line and headers
    must still be the ones a client configured as before would send."""
    ours: list[dict[str, str]] = []
    theirs: list[dict[str, str]] = []
    scraper = Scraper(token="tok")
    accept = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
    client = httpx.AsyncClient(
        headers={"Accept": accept, "Authorization": "Bearer tok"}, trust_env=False
    )
    async with (
        fs.serve(fs.respond(GOOD), seen_headers=ours) as base,
        fs.serve(fs.respond(GOOD), seen_headers=theirs) as other,
    ):
        assert (await scraper.scrape(base + "/metrics?x=1")).ok
        assert (await client.get(other + "/metrics?x=1")).content == GOOD
    await scraper.aclose()
    await client.aclose()
    ours[0]["host"] = theirs[0]["host"] = "-"  # the ports differ
    assert ours == theirs


async def test_compressed_body_is_decoded_and_capped_decoded() -> None:
    body = GOOD * 50
    packed = gzip.compress(body)

    def answer(request: httpx.Request) -> httpx.Response:
        assert "gzip" in request.headers["accept-encoding"]
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=packed)

    scraper = Scraper(transport=httpx.MockTransport(answer))
    result = await scraper.scrape("http://10.0.0.1:8080/metrics")
    small = Scraper(transport=httpx.MockTransport(answer), max_bytes=len(body) - 1)
    capped = await small.scrape("http://10.0.0.1:8080/metrics")
    await scraper.aclose()
    await small.aclose()
    assert result.ok and result.body == body and result.nbytes == len(body)
    assert capped.error is ScrapeError.TOO_LARGE


async def test_pools_of_replicas_gone_are_closed() -> None:
    scraper = Scraper()
    async with fs.serve(fs.respond(GOOD)) as one, fs.serve(fs.respond(GOOD)) as two:
        await scraper.scrape_all([one + "/metrics", two + "/metrics"])
        assert len(scraper._transports) == 2
        results = await scraper.scrape_all([two + "/metrics", None])
        assert [r.error for r in results] == [None, ScrapeError.NO_ENDPOINT]
        assert list(scraper._transports) == [two]  # keyed by origin
        assert list(scraper._urls) == [two + "/metrics"]
    await scraper.aclose()
    assert not scraper._transports and not scraper._urls


def test_metrics_url() -> None:
    assert metrics_url("http://10.0.0.1:8080") == "http://10.0.0.1:8080/metrics"
    assert metrics_url("10.0.0.1:8080/") == "http://10.0.0.1:8080/metrics"
    assert metrics_url(None) is None
    assert metrics_url("") is None
