"""Secrets in free text: masked, and nothing around them lost."""

from __future__ import annotations

import pytest

from wfdash.collect.redact import redact_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("token=abc) next", "token=***) next"),
        ("(api_key: 'sk-123456789')", "(api_key: '***')"),
        ("Authorization: Bearer abcdef123456 rest", "Authorization: Bearer *** rest"),
        ("HF_TOKEN=hf_abcdefghijklmnop, x", "HF_TOKEN=***, x"),
        (
            "cannot reach http://ops:s3cret@10.0.0.5:46580/api",
            "cannot reach http://ops:***@10.0.0.5:46580/api",
        ),
        ("http://10.0.0.5:46580/api/health", "http://10.0.0.5:46580/api/health"),
        ("no secrets here: min 3 → 5", "no secrets here: min 3 → 5"),
    ],
)
def test_free_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected
