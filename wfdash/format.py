"""Number and time formatting shared by the text report and the dashboard.

Unknown is shown as an em dash, never as 0; every number carries its unit.
"""

from __future__ import annotations

DASH = "—"


def fmt_num(value: float | None, digits: int = 2, unit: str = "") -> str:
    """A number with its unit, or an em dash for unknown (never a fake 0)."""
    if value is None:
        return DASH
    return f"{value:.{digits}f}{unit}"


def fmt_seconds(value: float | None) -> str:
    """A latency: '850ms', '1.2s', '14s'."""
    if value is None:
        return DASH
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 100:
        return f"{value:.1f}s"
    return f"{value:.0f}s"


def fmt_age(seconds: float | None) -> str:
    """A duration for ages and uptimes: '42s', '7m', '2h13m', '3d4h'."""
    if seconds is None:
        return DASH
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def fmt_money(per_hour: float | None) -> str:
    """'$3.12/h'; small amounts keep three decimals ('$0.110/h')."""
    if per_hour is None:
        return DASH
    return f"${per_hour:.3f}/h" if per_hour < 1 else f"${per_hour:.2f}/h"


def fmt_share(share: float | None) -> str:
    return DASH if share is None else f"{share * 100:.0f}%"
