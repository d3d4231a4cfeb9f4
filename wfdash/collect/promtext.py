"""A fast filter-parser for the Prometheus text format (0.0.4) of replica `/metrics`.

Why not `prometheus_client.parser.text_string_to_metric_families`: it parses every line of
every family, and a vLLM replica's ~50 KB answer has ~550 lines of which wfdash wants ~100
(request counts, a few histograms and gauges; a llama-server answer is only 36 lines).
wfdash scrapes up to 1000 replicas every few seconds, and prometheus_client spends 7-10 ms
on one vLLM payload: most of a core. This module skips the unwanted lines with one C-level
`str.startswith` each and parses only the wanted ones: ~25x faster than prometheus_client
on a vLLM payload in the steady state (label sets cached), ~15x on a replica's first
scrape, ~8x on a llama-server one (`tests/benchmarks/bench_parse.py`). On top of that it
remembers what each wanted line and comment came to (bounded): most of them are the
same as at the previous scrape (comments, idle series, low histogram buckets), and those
cost one dict lookup instead of a parse (another 2-3x on a vLLM payload in the steady
state, 4x on the wfdash agent's). The tests compare
it sample by sample with prometheus_client, on both dialects, on tricky hand-written
bodies and on generated ones, and fuzz it.

The parser never raises: a scrape can return anything (an HTML error page, a truncated
body, binary garbage). A wanted line it cannot parse is skipped and counted in `bad_lines`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import compress, repeat
from operator import is_
from typing import Literal, cast

__all__ = ["Exposition", "Sample", "parse_exposition"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample line. Equal label sets may share one mapping: treat it as read-only."""

    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class Exposition:
    """The wanted samples of one scrape, keyed by sample name, in the body's order."""

    samples: Mapping[str, list[Sample]]
    bad_lines: int
    truncated: bool


_FAMILY_SUFFIXES = ("", "_bucket", "_sum", "_count", "_created", "_total")

# name, then a label set up to the LAST "}" (no value or timestamp contains one), or
# blanks, then the value and an optional timestamp. Tokens exclude "}" so that a long line
# full of braces backtracks in linear time.
_SAMPLE_RE = re.compile(r"([^\s{]+)(?:[ \t]*\{(.*)\}[ \t]*|[ \t]+)([^\s}]+)(?:[ \t]+([^\s}]+))?\s*")
# Splitting a label set on its `name="value"` pairs leaves the separators between them:
# they must be "" before the first pair, "," between pairs and "" or "," after the last.
# A name starts nowhere inside another and nothing backtracks: linear time on any garbage.
_LABEL_PAIR_RE = re.compile(
    r'(?<![a-zA-Z0-9_])([a-zA-Z_][a-zA-Z0-9_]*+)[ \t]*+=[ \t]*+"((?:[^"\\]++|\\.)*+)"'
)
# The escapes prometheus_client (and Prometheus) undo; any other backslash stays as is.
_ESCAPE_RE = re.compile(r'\\[\\n"]')
_UNESCAPED = {"\\\\": "\\", "\\n": "\n", '\\"': '"'}
_MAX_CACHED_LABEL_TEXT = 1024


# Lines longer than this are not remembered (no real sample line comes close).
_MAX_CACHED_LINE = 512
# Remembered lines per family set (~8 MB at most); the memory is emptied when it is full.
# 20 agent replicas write ~2,800 lines a scrape, 20 vLLM ones ~10,000.
_MAX_CACHED_LINES = 32768


@dataclass(frozen=True, slots=True)
class _Wanted:
    names: frozenset[str]  # every sample name of the wanted families
    prefixes: tuple[str, ...]  # every wanted sample name starts with one of them
    prefixes_or_blank: tuple[str, ...]  # the same, and the blanks a line may start with
    worth_reading: tuple[str, ...]  # the same, and "#": the lines worth remembering
    # What each line read before came to: its Sample, True for a bad wanted line, False
    # for a line not wanted (a comment).
    lines: dict[str, Sample | bool] = field(default_factory=dict, compare=False, repr=False)


@lru_cache(maxsize=64)
def _wanted(families: frozenset[str]) -> _Wanted:
    names: set[str] = set()
    prefixes: set[str] = set()
    for family in families:
        names.update(family + suffix for suffix in _FAMILY_SUFFIXES)
        base = family.removesuffix("_total")
        if base != family:  # a counter named with `_total` also has `base_created`
            names.add(f"{base}_created")
        prefixes.add(base)
    ordered = tuple(sorted(prefixes))
    return _Wanted(frozenset(names), ordered, (*ordered, " ", "\t"), (*ordered, " ", "\t", "#"))


def parse_exposition(body: str | bytes, families: Collection[str]) -> Exposition:
    """Parse the samples of `families` out of a `/metrics` body; skip everything else.

    A family `F` owns the samples named `F`, `F_bucket`, `F_sum`, `F_count`, `F_created`
    and `F_total`; if `F` ends with `_total` (a counter), also `F`'s `_created` series
    (`vllm:prompt_tokens_total` comes with `vllm:prompt_tokens_created`). A body that does
    not end with a newline was cut short: its last, partial line is dropped.
    """
    text = body if isinstance(body, str) else body.decode("utf-8", "replace")
    lines = text.split("\n")
    truncated = lines.pop() != ""
    wanted = _wanted(frozenset((families,) if isinstance(families, str) else families))
    known = wanted.lines
    # A replica writes most lines unchanged from one scrape to the next (comments, idle
    # series, low histogram buckets), and replicas alike write many of the same ones: a
    # line seen before costs one dict lookup (in C), only the others are read.
    found: list[Sample | bool | None] = list(map(known.get, lines))
    missed = list(compress(range(len(lines)), map(is_, found, repeat(None))))
    # Of the lines not seen before, only those that may be wanted (or comments, which do
    # not change) are read and remembered, in Python; other families' lines are left out
    # here, in C, as None, and not remembered: their values change at every scrape.
    worth = map(str.startswith, map(lines.__getitem__, missed), repeat(wanted.worth_reading))
    for i in compress(missed, worth):
        line = lines[i]
        found[i] = read = _read_line(line, wanted)
        if len(line) <= _MAX_CACHED_LINE:
            if len(known) >= _MAX_CACHED_LINES:
                known.clear()
            known[line] = read
    samples: dict[str, list[Sample]] = {}
    bad_lines = 0
    # None and False (not wanted) are left out; True is a bad line.
    for sample in cast("Iterable[Sample | Literal[True]]", filter(None, found)):
        if sample is True:
            bad_lines += 1
        elif sample.name in samples:
            samples[sample.name].append(sample)
        else:
            samples[sample.name] = [sample]
    return Exposition(samples, bad_lines, truncated)


def _read_line(line: str, wanted: _Wanted) -> Sample | bool:
    """A line's sample; else True if it is a bad wanted line, False if it is not wanted."""
    if not line.startswith(wanted.prefixes_or_blank):
        return False
    stripped = line.lstrip(" \t")
    if stripped is not line and not stripped.startswith(wanted.prefixes):
        return False
    sample = _parse_sample(stripped, wanted.names)
    if sample is None:
        return _starts_wanted_name(stripped, wanted.names)
    return sample


def _parse_sample(line: str, names: frozenset[str]) -> Sample | None:
    """The sample on `line`, or None if it is malformed or not one of `names`.

    Trailing whitespace (the `\\r` of CRLF bodies) is allowed. `float` is fed no `_`: it
    would read digit groups (`1_000`), which the format does not have.
    """
    match = _SAMPLE_RE.fullmatch(line)
    if match is None:
        return None
    name, label_text, value_text, timestamp = match.groups()
    if name not in names or "_" in value_text or (timestamp and "_" in timestamp):
        return None
    try:
        value = float(value_text)
        if timestamp:
            float(timestamp)
    except ValueError:
        return None
    if not label_text:
        return Sample(name, {}, value)
    if len(label_text) > _MAX_CACHED_LABEL_TEXT:  # garbage: do not let it fill the cache
        labels = _parse_labels.__wrapped__(label_text)
    else:
        labels = _parse_labels(label_text)
    return None if labels is None else Sample(name, labels, value)


def _starts_wanted_name(line: str, names: frozenset[str]) -> bool:
    """Whether an unparsable line names a wanted sample (as far as it can be read)."""
    end = len(line)
    for stop in " \t{":
        found = line.find(stop, 0, end)
        if found >= 0:
            end = found
    return line[:end].rstrip() in names


@lru_cache(maxsize=16384)
def _parse_labels(text: str) -> Mapping[str, str] | None:
    """The label set between the braces, or None if malformed.

    Cached: a replica writes the same label sets at every scrape, and replicas serving one
    model write the same ones; the samples then share one mapping.
    """
    parts = _LABEL_PAIR_RE.split(text)
    separators = parts[::3]
    if (
        separators[0].strip(" \t")
        or separators[-1].strip(" \t") not in ("", ",")
        or any(sep.strip(" \t") != "," for sep in separators[1:-1])
    ):
        return None
    labels = {
        name: _ESCAPE_RE.sub(_unescape, value) if "\\" in value else value
        for name, value in zip(parts[1::3], parts[2::3], strict=True)
    }
    return labels if len(labels) == len(separators) - 1 else None  # no repeated name


def _unescape(match: re.Match[str]) -> str:
    return _UNESCAPED[match.group()]
