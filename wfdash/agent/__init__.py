"""The wfdash replica agent: a small reverse proxy in front of an inference backend.

BitNet's llama-server has no request counter and no latency histogram on `/metrics`, so
from outside nobody can tell its request rate or time to first token. The agent runs on
every replica in front of the backend (llama-server or vLLM), relays the OpenAI API byte
for byte, and serves a `/metrics` that holds its own measurements (requests by route and
outcome, TTFT and end-to-end latency histograms, tokens from `usage`, the replica's build
info) followed by the backend's own families, unchanged. See docs/agent.md.

Only the standard library and aiohttp are imported here, and only relatively inside this
package: the directory can be copied to a replica on its own (`file_mounts`) and run with
`python -m wfdash.agent` wherever aiohttp is installed (Python 3.10+).
"""

from __future__ import annotations

from .buildinfo import BuildInfo, load_build_info
from .config import AgentConfig
from .proxy import Agent

__all__ = ["Agent", "AgentConfig", "BuildInfo", "load_build_info"]
