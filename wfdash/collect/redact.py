"""Masking of secrets before anything reaches the screen, a log or the disk.

SkyServe's ``yaml_content`` is the whole task YAML of the latest version and may carry
plaintext secrets (``envs``, ``secrets``, probe headers). wfdash keeps only a redacted copy.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

MASK = "***"
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSW(OR)?D|PASSPHRASE|API_?KEY|ACCESS_?KEY|PRIVATE|CREDENTIAL|AUTH|COOKIE|"
    r"SESSION|SIGNATURE|DSN|CONN(ECTION)?_?STR)",
    re.IGNORECASE,
)
# Values that are secrets whatever their key is called.
_SECRET_VALUE = re.compile(
    r"^(hf_[A-Za-z0-9]{8,}|sk-[A-Za-z0-9_-]{8,}|gh[pousr]_[A-Za-z0-9]{8,}|AKIA[0-9A-Z]{12,}|"
    r"xox[abposr]-[A-Za-z0-9-]{8,}|-----BEGIN [A-Z ]*PRIVATE KEY-----.*|Bearer\s+\S+)$",
    re.DOTALL,
)
# Free text (error messages, URLs, log lines): the secret part after a telling word.
_SECRET_IN_TEXT = re.compile(
    r"(?i)(bearer\s+|(?:token|api[_-]?key|password|secret)[\"']?\s*[=:]\s*[\"']?)"
    r"([^\s\"'&,;)\]}>]+)"
)
# user:password@ in a URL (an API server endpoint, a proxy, a git remote).
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+:)[^@\s/]+@")
# Sections whose every value is a secret, wherever they appear in a task YAML.
_SECRET_SECTIONS = frozenset({"secrets", "headers"})


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def mask_value(name: str, value: object) -> str:
    """The value as text, masked when the name or the value itself looks secret."""
    text = "" if value is None else str(value)
    if text and (is_secret_name(name) or _SECRET_VALUE.match(text)):
        return MASK
    return text


def redact_text(text: str) -> str:
    """Mask bearer tokens, ``token=...``-style values and URL passwords in free text."""
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + "@", text)
    return _SECRET_IN_TEXT.sub(lambda m: m.group(1) + MASK, text)


def redact_tree(node: Any, *, all_secret: bool = False) -> Any:
    """A copy of a parsed YAML tree with secret-looking values masked."""
    if isinstance(node, dict):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            name = str(key)
            secret_section = all_secret or name.lower() in _SECRET_SECTIONS
            if isinstance(value, dict | list):
                out[key] = redact_tree(value, all_secret=secret_section)
            elif value is None:
                out[key] = None
            elif secret_section:
                out[key] = MASK
            else:
                masked = mask_value(name, value)
                out[key] = value if masked != MASK else MASK
        return out
    if isinstance(node, list):
        return [redact_tree(item, all_secret=all_secret) for item in node]
    if all_secret and node is not None:
        return MASK
    if isinstance(node, str) and _SECRET_VALUE.match(node):
        return MASK
    return node


def redact_yaml(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse a task YAML and return ``(redacted tree, redacted YAML text)``.

    Unparsable input yields ``(None, None)``: the raw text is never kept as a fallback,
    because it is exactly what might hold the secret.
    """
    try:
        # The C loader when PyYAML has it: ~10x faster, and this runs per service per poll.
        tree = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError:
        return None, None
    if not isinstance(tree, dict):
        return None, None
    redacted = redact_tree(tree)
    return redacted, yaml.safe_dump(redacted, sort_keys=False, default_flow_style=False)
