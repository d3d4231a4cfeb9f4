"""Settings: defaults < config file < WFDASH_* environment < flags; one-line errors."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wfdash.collect.poller import PollerConfig
from wfdash.config import (
    SETTINGS,
    Config,
    ConfigError,
    default_config_path,
    describe_settings,
    load_config,
    plainly_valid,
)
from wfdash.config_schema import config_model, validate
from wfdash.ui.themes import theme_names

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default config file lives in tmp_path: the real user's never leaks in."""
    config_home = tmp_path / "xdg-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    return config_home


def _file(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(**kwargs)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    # No chained exception to print: the message is all there is.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    return message


# ------------------------------------------------------------------ where settings come from


def test_defaults_when_there_is_no_config_file(_no_user_config: Path) -> None:
    assert default_config_path() == _no_user_config / "wfdash" / "config.toml"
    assert not default_config_path().exists()
    config = load_config(env={})
    assert config == Config()
    assert config.interval == 2.0
    assert config.theme == "wfdash-dark"
    assert config.services == []
    assert config.state_dir is None
    assert config.metrics_token_env == "WFDASH_METRICS_TOKEN"


def test_the_default_config_file_is_read_when_present() -> None:
    default_config_path().parent.mkdir(parents=True)
    default_config_path().write_text('interval = 5\nservices = ["bitnet"]\n')
    config = load_config(env={})
    assert config.interval == 5.0
    assert config.services == ["bitnet"]


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "interval = 5\nwindow = 120\nhistory_points = 50\ntheme = 'wfdash-light'\n"
        "ascii = true\nservices = ['a']\nstate_dir = '~/wf'\n",
    )
    env = {"WFDASH_WINDOW": "90", "WFDASH_INTERVAL": "7", "WFDASH_SERVICES": "b, c,,b"}
    overrides = {"interval": 9.0, "ascii": None, "read_only": True}
    config = load_config(path=path, env=env, overrides=overrides)
    assert config.interval == 9.0  # flag over env over file
    assert config.window == 90.0  # env over file
    assert config.history_points == 50  # file over default
    assert config.theme == "wfdash-light"
    assert config.ascii is True  # a None override is "flag not given"
    assert config.read_only is True
    assert config.services == ["b", "c"]  # comma-separated, blanks and repeats dropped
    assert config.state_dir == Path("~/wf").expanduser()


def test_env_values(tmp_path: Path) -> None:
    env = {
        "WFDASH_ASCII": "Yes",
        "WFDASH_READ_ONLY": "0",
        "WFDASH_SCRAPE_CONCURRENCY": "8",
        "WFDASH_SCRAPE_TIMEOUT": "1.5",
        "WFDASH_THEME": "wfdash-colorblind",
        "WFDASH_STATE_DIR": str(tmp_path),
        "WFDASH_METRICS_TOKEN_ENV": "MY_TOKEN",
        "WFDASH_STATUS_INTERVAL": "  ",  # blank: unset
    }
    config = load_config(env=env)
    assert (config.ascii, config.read_only) == (True, False)
    assert config.scrape_concurrency == 8
    assert config.scrape_timeout == 1.5
    assert config.theme == "wfdash-colorblind"
    assert config.state_dir == tmp_path
    assert config.status_interval == 6.0
    assert config.metrics_token({"MY_TOKEN": "s3cret"}) == "s3cret"
    assert config.metrics_token({}) is None


def test_wfdash_config_names_the_file_and_a_path_beats_it(tmp_path: Path) -> None:
    from_env = _file(tmp_path, "interval = 3\n", "env.toml")
    from_flag = _file(tmp_path, "interval = 4\n", "flag.toml")
    assert load_config(env={"WFDASH_CONFIG": str(from_env)}).interval == 3.0
    assert load_config(path=from_flag, env={"WFDASH_CONFIG": str(from_env)}).interval == 4.0


def test_a_config_file_named_explicitly_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert _error(path=missing, env={}) == f"config {missing}: no such file"
    assert _error(env={"WFDASH_CONFIG": str(missing)}) == f"config {missing}: no such file"


def test_poller_config_and_known_themes() -> None:
    config = load_config(env={}, overrides={"theme": "mine", "window": 30.0}, known_themes=["mine"])
    assert config.poller_config() == PollerConfig(
        metrics_interval=2.0, status_interval=6.0, rate_window=30.0, history_points=300
    )


# ------------------------------------------------------------------ errors: one line each


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("interval = -1\n", "interval: must be greater than 0 (got -1)"),
        ("interval = 7200\n", "interval: must be less than or equal to 3600 (got 7200)"),
        ("intervall = 3\n", "intervall: unknown key (did you mean 'interval'?)"),
        ("ascii = 'yes'\n", "ascii: must be a valid boolean (got 'yes')"),
        ("history_points = 2.5\n", "history_points: must be a valid integer (got 2.5)"),
        ("services = 'a'\n", "services: must be a valid list (got 'a')"),
        ("services = ['a', 3]\n", "services[1]: must be a valid string (got 3)"),
        ("services = ['a', ' ']\n", "services: service names must not be empty"),
        ("state_dir = ''\n", "state_dir: must not be empty"),
        ("theme = 'wfdash-drak'\n", "theme: unknown theme 'wfdash-drak' (known: wfdash-ansi, "),
        ("interval = \n", "not valid TOML: Invalid value (at line 1, column 12)"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_file_and_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = _file(tmp_path, text)
    message = _error(path=path, env={})
    assert message.startswith(f"config {path}: {expected}")


def test_every_problem_of_every_source_on_one_line(tmp_path: Path) -> None:
    path = _file(tmp_path, "interval = -1\nwindo = 3\n")
    message = _error(path=path, env={"WFDASH_WINDOW": "0"}, overrides={"status_interval": -2.0})
    assert message == (
        f"config {path}: interval: must be greater than 0 (got -1); "
        "windo: unknown key (did you mean 'window'?); "
        "--status-interval: must be greater than 0 (got -2.0); "
        "WFDASH_WINDOW: must be greater than 0 (got 0.0)"
    )


def test_unreadable_and_undecodable_files(tmp_path: Path) -> None:
    assert _error(path=tmp_path, env={}) == f"config {tmp_path}: cannot read: Is a directory"
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"theme = '\xff'\n")
    assert _error(path=binary, env={}) == f"config {binary}: not UTF-8 text"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WFDASH_ASCII": "maybe"}, "WFDASH_ASCII: not a boolean: 'maybe'"),
        ({"WFDASH_READ_ONLY": "2"}, "WFDASH_READ_ONLY: not a boolean: '2'"),
        ({"WFDASH_INTERVAL": "fast"}, "WFDASH_INTERVAL: not a number: 'fast'"),
        ({"WFDASH_INTERVAL": "nan"}, "WFDASH_INTERVAL: must be less than or equal to 3600"),
        ({"WFDASH_HISTORY_POINTS": "1.5"}, "WFDASH_HISTORY_POINTS: not an integer: '1.5'"),
        ({"WFDASH_SCRAPE_CONCURRENCY": "0"}, "WFDASH_SCRAPE_CONCURRENCY: must be greater than"),
        ({"WFDASH_THEME": "solarized"}, "WFDASH_THEME: unknown theme 'solarized' (known: "),
    ],
)
def test_a_bad_environment_variable_is_one_line_naming_it(
    env: dict[str, str], expected: str
) -> None:
    assert _error(env=env).startswith(expected)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"interval": -1.0}, "--interval: must be greater than 0 (got -1.0)"),
        ({"services": ["a", ""]}, "--service: service names must not be empty"),
        ({"theme": "nope"}, "--theme: unknown theme 'nope' (known: mine, wfdash-dark)"),
        ({"bogus": 1}, "--bogus: unknown key"),
    ],
)
def test_a_bad_flag_is_one_line_naming_it(overrides: dict[str, object], expected: str) -> None:
    assert _error(env={}, overrides=overrides, known_themes=["wfdash-dark", "mine"]) == expected


def test_an_unknown_default_theme_is_reported_too() -> None:
    assert _error(env={}, known_themes=[]) == (
        "default: theme: unknown theme 'wfdash-dark' (known: none)"
    )


# ------------------------------------------------------------------ secrets


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("metrics_token = 'hunter2-value'\n", "metrics_token"),
        ("password = 'hunter2-value'\n", "password"),
        ("[scrape]\nApi-Key = 'hunter2-value'\n", "scrape.Api-Key"),
        (
            "[[endpoints]]\nurl = 'x'\n[[endpoints]]\nbearer = 'hunter2-value'\n",
            "endpoints[1].bearer",
        ),
    ],
)
def test_secrets_in_the_config_file_are_refused_unechoed(
    tmp_path: Path, text: str, key: str
) -> None:
    path = _file(tmp_path, text)
    message = _error(path=path, env={})
    assert message.startswith(f"config {path}: {key}: looks like a secret")
    assert "environment variable" in message
    assert "hunter2" not in message


def test_the_token_variables_name_is_fine_but_a_token_there_is_not_echoed(tmp_path: Path) -> None:
    ok = _file(tmp_path, "metrics_token_env = 'MY_TOKEN'\n", "ok.toml")
    assert load_config(path=ok, env={}).metrics_token_env == "MY_TOKEN"
    bad = _file(tmp_path, "metrics_token_env = 'eyJhbGciOi.hunter2'\n", "bad.toml")
    message = _error(path=bad, env={})
    assert "metrics_token_env: must be the name of an environment variable" in message
    assert "hunter2" not in message


# ------------------------------------------------------------------ --help and hygiene


def test_describe_settings_covers_every_field() -> None:
    text = describe_settings()
    assert str(default_config_path()) in text
    assert "WFDASH_CONFIG" in text
    for setting in SETTINGS:
        assert f"  {setting.name} " in text
        assert f"WFDASH_{setting.name.upper()} " in text
        assert setting.metadata["description"] in text
    for name in theme_names():
        assert name in text
    assert "(> 0, <= 3600)" in text  # bounds come from the fields themselves
    path_line = f"  {default_config_path()}"
    assert max(len(line) for line in text.splitlines() if line != path_line) <= 100


def test_config_imports_no_ui_library() -> None:
    tree = ast.parse((ROOT / "wfdash" / "config.py").read_text())
    roots = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not roots & {"textual", "rich"}


def test_loading_the_config_loads_no_textual(tmp_path: Path) -> None:
    """``wfdash --once`` validates the theme name without paying for ``import textual``."""
    probe = (
        "import json, sys\n"
        "from wfdash.config import describe_settings, load_config\n"
        "load_config(env={'WFDASH_THEME': 'wfdash-light'})\n"
        "describe_settings()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'textual')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert json.loads(out.stdout) == []


def test_a_valid_configuration_loads_without_pydantic(tmp_path: Path) -> None:
    """The dashboard reads its settings before the first frame: pydantic (~0.1 s) is only
    imported to word a problem."""
    config_home = tmp_path / "xdg"
    (config_home / "wfdash").mkdir(parents=True)
    (config_home / "wfdash" / "config.toml").write_text(
        "interval = 5\nwindow = 120.5\nservices = ['bitnet']\nstate_dir = '~/wf'\n"
        "ascii = true\ntheme = 'wfdash-light'\nmetrics_token_env = 'MY_TOKEN'\n"
    )
    probe = (
        "import json, sys\n"
        "from wfdash.config import load_config\n"
        "config = load_config(overrides={'interval': 3.0, 'read_only': True})\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic')\n"
        "try:\n"
        "    load_config(overrides={'interval': -1.0})\n"
        "except Exception as exc:\n"
        "    error = str(exc)\n"
        "print(json.dumps([config.interval, config.window, config.theme, loaded, error]))\n"
    )
    env = {
        "XDG_CONFIG_HOME": str(config_home),
        "PATH": "/usr/bin:/bin",
        "WFDASH_STATE_DIR": str(tmp_path / "state"),
        "WFDASH_SCRAPE_TIMEOUT": "1.5",
    }
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    assert json.loads(out.stdout) == [
        3.0,
        120.5,
        "wfdash-light",
        [],
        "--interval: must be greater than 0 (got -1.0)",
    ]


# ------------------------------------------------------------------ fast path vs pydantic

THEMES = frozenset({"wfdash-dark", "wfdash-light"})
_anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.integers(min_value=-5, max_value=5000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1, max_value=5000),
    st.text(max_size=12),
    st.sampled_from(["wfdash-dark", "wfdash-light", "solarized", "", " ", "~/x", "MY_TOKEN"]),
    st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=4),
    st.lists(st.sampled_from(["a", " b ", "a", ""]), max_size=4),
    st.tuples(st.text(max_size=3)),
    st.builds(Path, st.sampled_from(["/tmp/x", "~/y", "rel"])),
)
_keys = st.sampled_from([setting.name for setting in SETTINGS] + ["intervall", "token"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_keys, _anything, max_size=5))
def test_the_fast_path_never_accepts_what_pydantic_would_not(data: dict[str, object]) -> None:
    fast = plainly_valid(data, THEMES)
    try:
        slow: Config | None = validate(data, {}, THEMES)
    except ConfigError:
        slow = None
    if fast is not None:
        assert slow == fast
        for setting in SETTINGS:  # the same types too: 5 and 5.0 are equal
            name = setting.name
            assert type(getattr(fast, name)) is type(getattr(slow, name))


_valid = {
    "interval": st.floats(min_value=0.001, max_value=3600) | st.integers(1, 3600),
    "status_interval": st.floats(min_value=0.5, max_value=3600),
    "window": st.floats(min_value=1, max_value=86400),
    "history_points": st.integers(2, 100_000),
    "theme": st.sampled_from(sorted(THEMES)),
    "ascii": st.booleans(),
    "read_only": st.booleans(),
    "services": st.lists(st.text(min_size=1).filter(str.strip), max_size=3),
    "state_dir": st.none() | st.sampled_from(["~/wf", "/var/lib/wfdash", Path("/tmp")]),
    "scrape_timeout": st.floats(min_value=0.1, max_value=300),
    "scrape_concurrency": st.integers(1, 4096),
    "metrics_token_env": st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
}


def test_every_setting_has_a_valid_value_strategy() -> None:
    assert set(_valid) == {setting.name for setting in SETTINGS}


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional=_valid))
def test_the_fast_path_takes_every_valid_configuration(data: dict[str, object]) -> None:
    """So pydantic is never imported for a good configuration."""
    fast = plainly_valid(data, THEMES)
    assert fast is not None
    assert fast == validate(data, {}, THEMES)


def test_the_schema_is_built_from_the_same_fields() -> None:
    model = config_model()
    assert list(model.model_fields) == [setting.name for setting in SETTINGS]
    defaults = model.model_validate({}, context={"known_themes": THEMES})
    assert Config(**defaults.model_dump()) == Config()
