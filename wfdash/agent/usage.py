"""Token counts from the `usage` object of completion responses, read as they stream by.

A JSON answer carries `usage` at its top level; a server-sent-event stream carries it in
one of its last `data:` events (llama-server's final chunk; vLLM's own usage chunk when the
request asked for `stream_options.include_usage`, or every chunk, cumulatively, with
`continuous_usage_stats`). The last `usage` seen wins.

Reading costs one substring search per relayed chunk; only a line that contains `"usage"`
is decoded. Memory is bounded: a JSON body is kept up to `MAX_JSON_BYTES`, an unfinished
SSE line up to `MAX_LINE_BYTES`; anything longer is not read for usage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TypeGuard

MAX_JSON_BYTES = 1024 * 1024
MAX_LINE_BYTES = 256 * 1024
_USAGE = b'"usage"'


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


class UsageScanner:
    """Feed it the response body chunk by chunk, then ask `result()`."""

    __slots__ = ("_buffer", "_overflow", "_stream", "_usage")

    def __init__(self, content_type: str) -> None:
        self._stream = content_type.split(";", 1)[0].strip().lower() == "text/event-stream"
        self._buffer = bytearray()
        self._overflow = False
        self._usage: Usage | None = None

    def feed(self, chunk: bytes) -> None:
        if self._stream:
            self._feed_events(chunk)
        elif not self._overflow:
            if len(self._buffer) + len(chunk) > MAX_JSON_BYTES:
                self._overflow = True
                self._buffer.clear()
            else:
                self._buffer += chunk

    def result(self) -> Usage | None:
        if not self._stream and not self._overflow and _USAGE in self._buffer:
            self._take(bytes(self._buffer))
        return self._usage

    def _feed_events(self, chunk: bytes) -> None:
        end = chunk.rfind(b"\n")
        if end < 0:  # no line ends in this chunk: keep it for the next one
            self._keep(chunk)
            return
        if self._overflow:  # this chunk ends the overlong line: skip that part
            lines = chunk[chunk.find(b"\n") + 1 : end]
            self._overflow = False
        elif self._buffer:
            lines = bytes(self._buffer) + chunk[:end]
            self._buffer.clear()
        else:
            lines = chunk[:end]
        self._keep(chunk[end + 1 :])
        if _USAGE not in lines:
            return
        for line in lines.split(b"\n"):
            if line.startswith(b"data:") and _USAGE in line:
                self._take(line[5:])

    def _keep(self, tail: bytes) -> None:
        """Keep the start of an unfinished line; drop a line that grows too long."""
        if self._overflow:
            return
        if len(self._buffer) + len(tail) > MAX_LINE_BYTES:
            self._buffer.clear()
            self._overflow = True  # until the next line end
        else:
            self._buffer += tail

    def _take(self, payload: bytes) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            return
        usage = data.get("usage") if isinstance(data, dict) else None
        if not isinstance(usage, dict):
            return
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if _count(prompt) and _count(completion):
            self._usage = Usage(prompt, completion)


def _count(value: object) -> TypeGuard[int]:
    return type(value) is int and value >= 0
