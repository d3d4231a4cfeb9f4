"""wfdash: the operator's cockpit for BitNet LLM serving on SkyPilot SkyServe."""

__version__ = "0.1.0"
