"""The fast Prometheus filter-parser, checked sample by sample against prometheus_client.

prometheus_client parses every family; `parse_exposition` must return exactly its samples
for the families asked for, on both replica dialects and on hand-written tricky bodies, and
must never raise, whatever a scrape returns.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Collection, Iterable

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from wfdash.collect import promtext
from wfdash.collect.promtext import Exposition, Sample, parse_exposition
from wfdash.sandbox.exposition import (
    FINISH_REASONS,
    LlamaCppCounters,
    VllmCounters,
    render_llamacpp_metrics,
    render_vllm_metrics,
)

VLLM_FAMILIES = (
    "vllm:request_success_total",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:time_per_output_token_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:num_preemptions_total",
)
LLAMACPP_FAMILIES = tuple(
    f"llamacpp:{name}"
    for name in (
        "prompt_tokens_total",
        "prompt_seconds_total",
        "tokens_predicted_total",
        "tokens_predicted_seconds_total",
        "n_decode_total",
        "n_busy_slots_per_decode",
        "prompt_tokens_seconds",
        "predicted_tokens_seconds",
        "kv_cache_usage_ratio",
        "kv_cache_tokens",
        "requests_processing",
        "requests_deferred",
    )
)

Flat = dict[str, list[tuple[str, dict[str, str], object]]]


def sample_names(families: Iterable[str]) -> set[str]:
    """The sample names a family owns, written from the spec (not from the module)."""
    names: set[str] = set()
    for family in families:
        names |= {family + s for s in ("", "_bucket", "_sum", "_count", "_created", "_total")}
        if family.endswith("_total"):
            names.add(family[: -len("_total")] + "_created")
    return names


def _value_key(value: float) -> object:
    return "NaN" if math.isnan(value) else float(value)


def oracle(body: str, families: Collection[str]) -> Flat:
    """prometheus_client's samples of `families`, as the body names them.

    prometheus_client appends `_total` to the samples of a counter family whose TYPE line
    lacks it (llama.cpp's `n_busy_slots_per_decode`): undone here.
    """
    renamed = {
        name
        for name in re.findall(r"^[ \t]*# TYPE (\S+) counter\s*$", body, re.MULTILINE)
        if not name.endswith("_total")
    }
    wanted = sample_names(families)
    out: Flat = {}
    for metric in text_string_to_metric_families(body):
        for sample in metric.samples:
            name = sample.name
            if metric.type == "counter" and metric.name in renamed and name.endswith("_total"):
                name = name[: -len("_total")]
            if name in wanted:
                out.setdefault(name, []).append((name, sample.labels, _value_key(sample.value)))
    return out


def flat(expo: Exposition) -> Flat:
    return {
        name: [(s.name, dict(s.labels), _value_key(s.value)) for s in samples]
        for name, samples in expo.samples.items()
    }


def assert_matches_oracle(body: str, families: Collection[str]) -> Exposition:
    expo = parse_exposition(body, families)
    assert flat(expo) == oracle(body, families)
    assert expo.bad_lines == 0
    return expo


def families_in(body: str) -> set[str]:
    """Every sample name in a body: asking for all of them must give everything back."""
    return {
        re.split(r"[\s{]", line.strip(), maxsplit=1)[0]
        for line in body.splitlines()
        if line.strip() and not line.strip().startswith("#")
    }


# --------------------------------------------------------------------------- payloads


def vllm_state(seed: int) -> VllmCounters:
    """A replica state with random traffic: some seeds idle, some with huge values."""
    rng = random.Random(seed)
    m = VllmCounters(created=rng.uniform(1.6e9, 1.8e9))
    requests = (0, 3, 5000, 200)[seed % 4]
    scale = 1e12 if seed % 5 == 4 else 1.0
    for _ in range(requests):
        m.finished[rng.choice(FINISH_REASONS)] += 1
        for hist in (m.ttft, m.e2e_latency, m.queue_time, m.prefill_time, m.decode_time):
            hist.observe(rng.lognormvariate(0, 2) * scale)
        m.inter_token_latency.observe(rng.lognormvariate(-3, 1))
        m.http_duration.observe(rng.expovariate(0.5))
        m.prompt_tokens_per_request.observe(rng.randint(1, 4000))
    m.prompt_tokens = rng.randint(0, 10**9)
    m.generation_tokens = int(m.prompt_tokens * scale)
    m.kv_cache_usage = math.nan if seed == 3 else rng.random()
    m.num_requests_waiting = rng.randint(0, 100)
    return m


def llamacpp_state(seed: int) -> LlamaCppCounters:
    rng = random.Random(seed)
    if seed == 0:
        return LlamaCppCounters()  # no decode yet: n_busy_slots_per_decode is -nan
    scale = 10.0 ** rng.randint(0, 12)
    return LlamaCppCounters(
        prompt_tokens_total=int(rng.randint(0, 10**6) * scale),
        prompt_seconds_total=rng.uniform(0, 1e4),
        tokens_predicted_total=rng.randint(0, 10**7),
        tokens_predicted_seconds_total=rng.uniform(0, 1e5) * scale,
        n_decode_total=rng.randint(1, 10**8),
        n_busy_slots_per_decode=rng.uniform(1, 4),
        prompt_tokens_seconds=rng.uniform(0, 50),
        predicted_tokens_seconds=math.inf if seed == 3 else rng.uniform(0, 50),
        kv_cache_usage_ratio=rng.random(),
        kv_cache_tokens=rng.randint(0, 4096),
        requests_processing=rng.randint(0, 4),
        requests_deferred=rng.randint(0, 40),
    )


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("legacy_names", [False, True])
def test_vllm_payload_matches_prometheus_client(seed: int, legacy_names: bool) -> None:
    body = render_vllm_metrics(vllm_state(seed), legacy_names=legacy_names)
    expo = assert_matches_oracle(body, VLLM_FAMILIES)
    assert len(expo.samples["vllm:request_success_total"]) == len(FINISH_REASONS)
    assert len(expo.samples["vllm:time_to_first_token_seconds_bucket"]) == 23
    assert_matches_oracle(body, families_in(body))


@pytest.mark.parametrize("seed", range(5))
def test_llamacpp_payload_matches_prometheus_client(seed: int) -> None:
    body = render_llamacpp_metrics(llamacpp_state(seed))
    expo = assert_matches_oracle(body, LLAMACPP_FAMILIES)
    assert len(expo.samples) == 12
    assert all(len(samples) == 1 for samples in expo.samples.values())


def test_llamacpp_nan_before_first_decode() -> None:
    expo = parse_exposition(render_llamacpp_metrics(LlamaCppCounters()), LLAMACPP_FAMILIES)
    (busy,) = expo.samples["llamacpp:n_busy_slots_per_decode"]
    assert math.isnan(busy.value)
    assert busy == Sample("llamacpp:n_busy_slots_per_decode", {}, busy.value)


def test_both_dialects_with_one_family_set() -> None:
    families = VLLM_FAMILIES + LLAMACPP_FAMILIES
    for body in (
        render_vllm_metrics(vllm_state(2)),
        render_llamacpp_metrics(llamacpp_state(1)),
        render_vllm_metrics(vllm_state(1)) + render_llamacpp_metrics(llamacpp_state(2)),
    ):
        assert_matches_oracle(body, families)


TRICKY = {
    "escapes": r"""# HELP esc A help with \\ and \n escapes
# TYPE esc gauge
esc{quote="say \"hi\"",slash="C:\\dir\\",nl="two\nlines",other="keep \t as is"} 1
esc{both="\\\"",end="\\"} 2
""",
    "brace_and_comma_in_values": """\
req_total{path="/v1/x,y}",q="{a=1,b=2}",empty=""} 3
req_total{path="}}}",q=",,,"} 4
""",
    "crlf": "# HELP c_total A counter\r\n# TYPE c_total counter\r\nc_total 5\r\n"
    'c_created 1.7e+09\r\nc_total{a="b"} 6\r\n',
    "timestamps": """\
ts 1 1700000000000
ts{a="b"} 2 -5
ts{a="c"}\t3\t1700000000000
""",
    "comments_and_blank_lines": """\
# a free comment

#
#no space after the hash
# HELP cm Help.
   \t
cm 7
# TYPE cm gauge

cm{x="y"} 8

""",
    "special_values": """\
sv{k="nan"} NaN
sv{k="-nan"} -nan
sv{k="nan2"} nan
sv{k="inf"} +Inf
sv{k="-inf"} -Inf
sv{k="g"} 1.23457e+06
sv{k="e"} -1.5E-7
sv{k="int"} 12345678901234567
sv{k="plus"} +5
sv{k="dot"} .5
sv{k="neg0"} -0
""",
    "trailing_comma_and_empty_set": """\
tc{a="b",} 9
tc{} 10
tc{ a = "b" , c="d" , } 11
""",
    "extra_whitespace": 'ws  {a="b"}   12   \nws\t13\t\nws{a="c"}14\n  ws 15\n\tws{a="d"} 16\n',
    "histogram": """\
# HELP h_seconds A histogram
# TYPE h_seconds histogram
h_seconds_bucket{le="0.1",model_name="m"} 1.0
h_seconds_bucket{le="+Inf",model_name="m"} 2.0
h_seconds_count{model_name="m"} 2.0
h_seconds_sum{model_name="m"} 0.35
# HELP h_seconds_created A histogram
# TYPE h_seconds_created gauge
h_seconds_created{model_name="m"} 1.7e+09
""",
    "unicode": 'uni{label="h\u00e9llo \u2713 \u2028 \u0085 \U0001f600"} 17\n',
    "untyped_and_summary": """\
# TYPE s summary
s{quantile="0.5"} 1
s_sum 3
s_count 2
u 4
""",
}


@pytest.mark.parametrize("case", TRICKY)
def test_tricky_payload_matches_prometheus_client(case: str) -> None:
    body = TRICKY[case]
    expo = assert_matches_oracle(body, families_in(body))
    assert sum(map(len, expo.samples.values())) > 0
    assert not expo.truncated


def test_tricky_values_parse_as_expected() -> None:
    expo = parse_exposition(TRICKY["escapes"] + TRICKY["special_values"], ["esc", "sv"])
    assert dict(expo.samples["esc"][0].labels) == {
        "quote": 'say "hi"',
        "slash": "C:\\dir\\",
        "nl": "two\nlines",
        "other": "keep \\t as is",
    }
    values = {s.labels["k"]: s.value for s in expo.samples["sv"]}
    assert math.isnan(values["-nan"])
    assert values["inf"] == math.inf
    assert values["-inf"] == -math.inf
    assert values["g"] == 1234570.0
    assert values["int"] == 12345678901234567.0


def test_family_matching() -> None:
    body = """\
vllm:prompt_tokens_total 1
vllm:prompt_tokens_created 2
vllm:prompt_tokens_cached_total 3
vllm:prompt_tokens 4
h_bucket{le="1"} 5
h_sum 6
h_count 7
h_created 8
h_total 9
h 10
h_other 11
hx 12
"""
    expo = parse_exposition(body, ["vllm:prompt_tokens_total", "h"])
    assert sorted(expo.samples) == sorted(
        [
            "vllm:prompt_tokens_total",
            "vllm:prompt_tokens_created",
            "h_bucket",
            "h_sum",
            "h_count",
            "h_created",
            "h_total",
            "h",
        ]
    )
    assert parse_exposition(body, []).samples == {}
    assert sorted(parse_exposition(body, ["vllm:prompt_tokens"]).samples) == [
        "vllm:prompt_tokens",
        "vllm:prompt_tokens_created",
        "vllm:prompt_tokens_total",
    ]


@pytest.mark.parametrize(
    "line",
    [
        "w{a=} 1",
        'w{a="b"}',
        "w",
        "w -nan(ind)",
        "w 1_000",
        "w 1 2 3",
        'w{a="b",a="c"} 1',
        'w{a="b" c="d"} 1',
        'w{a="b",,c="d"} 1',
        'w{a="unterminated} 1',
        'w{"a"="b"} 1',
        'w{1a="b"} 1',
        'w{a="b"} 1 notatimestamp',
        "w 0x10",
        "w{a='b'} 1",
    ],
)
def test_unparsable_wanted_line_is_counted(line: str) -> None:
    body = f"w 1\n{line}\nw 2\nother garbage {{\n"
    expo = parse_exposition(body, ["w"])
    assert expo.bad_lines == 1
    assert [s.value for s in expo.samples["w"]] == [1.0, 2.0]


def test_unwanted_garbage_is_not_counted() -> None:
    body = "<html><body>502 Bad Gateway</body></html>\nunwanted{ 1\n\x00\xff\n"
    assert parse_exposition(body, ["w"]) == Exposition({}, 0, False)


def test_bytes_input() -> None:
    body = 'b{v="caf\xe9"} 1\n'.encode() + b'b{v="\xff\xfe"} 2\n'
    samples = parse_exposition(body, ["b"]).samples["b"]
    assert [dict(s.labels) for s in samples] == [{"v": "caf\xe9"}, {"v": "\ufffd\ufffd"}]


TRUNCATED_FAMILIES = (*LLAMACPP_FAMILIES, "esc", "c_total")


def test_truncated_at_every_offset() -> None:
    body = render_llamacpp_metrics(llamacpp_state(1)) + TRICKY["escapes"] + TRICKY["crlf"]
    for cut in range(len(body) + 1):
        part = body[:cut]
        expo = parse_exposition(part, TRUNCATED_FAMILIES)
        assert expo.truncated == (part != "" and not part.endswith("\n"))
        complete = part[: part.rfind("\n") + 1]
        assert flat(expo) == flat(parse_exposition(complete, TRUNCATED_FAMILIES))
        assert expo.bad_lines == 0


def test_truncated_vllm_payload() -> None:
    body = render_vllm_metrics(vllm_state(2)).encode()
    rng = random.Random(7)
    for cut in sorted(rng.sample(range(len(body)), 40)):
        expo = parse_exposition(body[:cut], VLLM_FAMILIES)
        assert expo.truncated == (body[cut - 1 : cut] != b"\n")
        assert expo.bad_lines == 0


def test_huge_lines_stay_linear() -> None:
    """Pathological lines of a wanted family: every one is rejected, none takes long."""
    n = 100_000
    body = "".join(
        f"w{line}\n"
        for line in (
            "{" + "a" * n + "} 1",
            "{" + "}" * n + " 1",
            '{a="' + ' a=\\"' * (n // 5) + "} 1",
            "{" + 'a="b" ' * (n // 6) + "} 1",
            '{a="' + "\\" * n + "} 1",
            " " + " \t" * n + "1 2 3",
        )
    )
    assert parse_exposition(body, ["w"]).bad_lines == 6


# --------------------------------------------------------------------------- line memory


def parse_fresh(body: str | bytes, families: Collection[str]) -> Exposition:
    """A parse with nothing remembered from earlier ones."""
    promtext._wanted.cache_clear()
    return parse_exposition(body, families)


def test_remembered_lines_give_what_a_fresh_parse_gives() -> None:
    """Scrape after scrape of replicas whose counters move (lines seen before, lines not,
    bad lines, unwanted ones): the same samples, bad-line counts and truncation as a parse
    that remembers nothing."""
    families = (*VLLM_FAMILIES, *LLAMACPP_FAMILIES, "esc", "h_seconds")
    promtext._wanted.cache_clear()
    bodies = []
    for step in range(12):
        body = render_vllm_metrics(vllm_state(step % 4)) + render_llamacpp_metrics(
            llamacpp_state(step % 3)
        )
        body += TRICKY["escapes"] + TRICKY["histogram"] + "esc{a=oops} 1\nesc 1_0\n"
        bodies.append(body if step % 5 else body[: len(body) // 2])
    for body in bodies + bodies[::-1]:
        remembered = parse_exposition(body, families)
        assert len(promtext._wanted(frozenset(families)).lines) > 0
        fresh = parse_fresh(body, families)
        assert flat(remembered) == flat(fresh)
        assert list(remembered.samples) == list(fresh.samples)
        assert remembered.truncated == fresh.truncated
        assert remembered.bad_lines == fresh.bad_lines >= (0 if fresh.truncated else 2)
        promtext._wanted.cache_clear()
        parse_exposition(bodies[0], families)  # the next round starts with memories


def test_line_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(promtext, "_MAX_CACHED_LINES", 50)
    promtext._wanted.cache_clear()
    memory = promtext._wanted(frozenset(["m"])).lines
    long_label = "x" * 600
    for step in range(20):
        body = "".join(f'm{{i="{i}"}} {step}\n' for i in range(30))
        body += f'm{{l="{long_label}"}} {step}\n'
        expo = parse_exposition(body, ["m"])
        assert [s.value for s in expo.samples["m"]] == [float(step)] * 31
        assert len(memory) <= 50
        assert not any(long_label in line for line in memory)  # long lines are not kept


# --------------------------------------------------------------------------- fuzzing

NAME_POOL = [
    "m", "m_total", "m_created", "m_bucket", "m_sum", "m_count", "mx",
    "vllm:h", "vllm:h_bucket", "vllm:h_sum", "vllm:c_total", "vllm:c_created", "a:b_c", "_u",
]  # fmt: skip
FAMILY_POOL = ["m", "m_total", "vllm:h", "vllm:c_total", "vllm:c", "a:b_c", "_u", "mx", "zz"]

label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,4}", fullmatch=True).filter(
    lambda name: not name.startswith("__")
)
label_values = st.text(max_size=6)
blanks = st.sampled_from([" ", "\t", "  ", " \t "])
opt_blanks = st.sampled_from(["", " ", "\t"])


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@st.composite
def numbers(draw: st.DrawFn) -> str:
    value = draw(st.one_of(st.floats(), st.integers(-(10**20), 10**20)))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return draw(st.sampled_from(["NaN", "nan", "-nan"]))
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return draw(st.sampled_from([repr(value), f"{value:g}", f"{value:.3e}"]))


@st.composite
def sample_lines(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(NAME_POOL))
    line = name
    labels: dict[str, str] = draw(st.dictionaries(label_names, label_values, max_size=3))
    braces: bool = draw(st.booleans())
    if labels or braces:
        pairs = [
            f'{draw(opt_blanks)}{k}{draw(opt_blanks)}={draw(opt_blanks)}"{escape(v)}"'
            f"{draw(opt_blanks)}"
            for k, v in labels.items()
        ]
        comma: bool = draw(st.booleans())
        trailing = "," if pairs and comma else ""
        line += f"{draw(st.sampled_from(['', ' ']))}{{{','.join(pairs)}{trailing}}}"
        line += draw(opt_blanks)
    else:
        line += draw(blanks)
    line += draw(numbers())
    if draw(st.booleans()):
        line += draw(blanks) + str(draw(st.integers(-(10**13), 10**13)))
    return draw(st.sampled_from(["", " ", "\t"])) + line + draw(opt_blanks)


comment_lines = st.one_of(
    st.just("#"),
    st.just(""),
    st.builds(
        lambda text: f"# {text}",
        st.text(max_size=10).filter(lambda t: not any(w in t for w in ("\n", "HELP", "TYPE"))),
    ),
    st.builds(
        lambda name, text: f"# HELP {name} {escape(text)}",
        st.sampled_from(NAME_POOL),
        st.text(max_size=8),
    ),
    st.builds(
        lambda name, kind: f"# TYPE {name} {kind}",
        st.sampled_from(NAME_POOL),
        # a counter not named `_total` would have prometheus_client rename its samples
        st.sampled_from(["gauge", "histogram", "summary", "untyped"]),
    ),
    st.builds(lambda name: f"# TYPE {name} counter", st.sampled_from(["m_total", "vllm:c_total"])),
)


@st.composite
def valid_bodies(draw: st.DrawFn) -> str:
    lines = draw(st.lists(st.one_of(sample_lines(), comment_lines), max_size=12))
    ends = [draw(st.sampled_from(["\n", "\r\n"])) for _ in lines]
    return "".join(line + end for line, end in zip(lines, ends, strict=True))


@settings(max_examples=150, deadline=None)
@given(valid_bodies(), st.sets(st.sampled_from(FAMILY_POOL)))
def test_generated_bodies_match_prometheus_client(body: str, families: set[str]) -> None:
    assert_matches_oracle(body, families)


def check_never_raises(body: str | bytes, families: Collection[str]) -> Exposition:
    expo = parse_exposition(body, families)
    wanted = sample_names(families)
    assert expo.bad_lines >= 0
    for name, samples in expo.samples.items():
        assert name in wanted
        assert samples
        assert all(s.name == name for s in samples)
    return expo


@settings(max_examples=150, deadline=None)
@given(st.text(), st.sets(st.sampled_from(FAMILY_POOL)))
def test_any_text_never_raises(body: str, families: set[str]) -> None:
    expo = check_never_raises(body, families)
    assert expo.truncated == (body != "" and not body.endswith("\n"))


@settings(max_examples=150, deadline=None)
@given(st.binary(), st.sets(st.sampled_from(FAMILY_POOL)))
def test_any_bytes_never_raise(body: bytes, families: set[str]) -> None:
    check_never_raises(body, families)


MUTATED_BASE = (
    render_llamacpp_metrics(llamacpp_state(2)) + TRICKY["escapes"] + TRICKY["histogram"]
).encode()
MUTATED_FAMILIES = (*LLAMACPP_FAMILIES, "esc", "h_seconds")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, len(MUTATED_BASE) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_payload_never_raises(flips: list[tuple[int, int]]) -> None:
    """Byte flips in a real payload: no exception, and where prometheus_client still
    accepts the text and we counted no bad line, both agree."""
    mutated = bytearray(MUTATED_BASE)
    for index, byte in flips:
        mutated[index] = byte
    expo = check_never_raises(bytes(mutated), MUTATED_FAMILIES)
    text = bytes(mutated).decode("utf-8", "replace")
    try:
        expected = oracle(text[: text.rfind("\n") + 1], MUTATED_FAMILIES)
    except ValueError:
        return
    assume(expo.bad_lines == 0)
    assert flat(expo) == expected
