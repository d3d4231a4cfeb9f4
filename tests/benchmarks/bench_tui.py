"""The dashboard's own costs: first paint, CPU, terminal bytes/s, table refresh at 1000 rows.

    .venv/bin/python tests/benchmarks/bench_tui.py [--only paint,cpu,bytes,table] [--runs 5]
        [--seconds 30] [--replicas 20] [--big 1000] [--refreshes 20] [--profile]
        [--keep-stream FILE]

About 12 minutes in all on 2 cores (one 1000-row refresh where every row changes takes
about a minute by itself). CPU and bytes are also given per snapshot: the poll cycle waits
for the slowest scrape, so snapshots may arrive less often than every 2 s.

A script, not a test (pytest collects ``test_*.py``). Every figure is printed next to its
target, with a baseline measured in the same run where one makes sense:

1. Time to first paint of the real ``python -m wfdash demo`` (wfdash's bytecode written
   first, as a wheel install does) in a pseudo-terminal (160x48,
   TERM=xterm-256color, fresh WFDASH_STATE_DIR), from spawn until the header text
   "wfdash ·" has arrived on the pty master; baseline: a minimal Textual app started the
   same way. ``import sky`` before the first paint is detected by a meta-path hook that
   writes a private OSC sequence into the same terminal stream the moment anything
   imports ``sky``: its position in the byte stream relative to the first frame is the
   order the terminal saw. Checked for the demo and for SkyPilot mode (``python -m
   wfdash`` against an unreachable API server, so the SDK is really imported).
2. CPU of the running TUI with N replicas at a 2 s interval: the sandbox fleet runs in a
   separate process (this script, ``_sandbox`` mode) that serves its ``serve_status()`` /
   ``cluster_status()`` records as JSON over HTTP; the TUI process (``_tui`` mode) is the
   real app started through ``wfdash.cli.run_tui`` with a StatusSource that fetches that
   JSON, and its poller scrapes the replicas' /metrics across the process boundary, as it
   would scrape real replicas. CPU = utime+stime from /proc/<pid>/stat over the window.
3. Bytes/s written to the terminal in the same window (bytes read from the pty master),
   truecolor, then 256 and 16 colours for comparison; baseline: a minimal Textual app
   updating one line once a second.
4. Refresh time with 1000 replicas, in-process (``_table`` mode, ``App.run_test``):
   ``apply_snapshot`` (header, table in place, plots), ``ReplicaTable.show`` within it,
   and the paint that follows (message processing + layout + compositor).

Children run in their own sessions and are killed (SIGTERM, then SIGKILL to the process
group) on every exit path; temporary directories are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import fcntl
import itertools
import json
import os
import pty
import random
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
THIS = str(Path(__file__).resolve())
COLS, ROWS = 160, 48
CLK_TCK = os.sysconf("SC_CLK_TCK")

PAINT_TARGET_S = 0.5
CPU_TARGET_PCT = 3.0
BYTES_TARGET_KBS = 10.0
REFRESH_TARGET_MS = 50.0

# CSI, OSC, DCS/PM/APC, charset selection and single-character escapes.
ANSI = re.compile(
    rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[PX^_][^\x1b]*\x1b\\"
    rb"|[()][0-9A-Za-z]|[=>78DEHMNOZc])"
)
WFDASH_MARKER = "wfdash ·".encode()
DATA_MARKER = re.compile(rb"\d+/\d+ ready")
MINI_MARKER = "bench ·".encode()
SKY_OSC = b"\x1b]7777;bench-import-sky"

MINI_APP = """
import sys
from textual.app import App, ComposeResult
from textual.widgets import Static

TICK = len(sys.argv) > 1 and sys.argv[1] == "tick"


class Mini(App[None]):
    def compose(self) -> ComposeResult:
        yield Static("bench · minimal textual app", id="line")

    def on_mount(self) -> None:
        if TICK:
            self.n = 0
            self.set_interval(1.0, self.tick)

    def tick(self) -> None:
        self.n += 1
        self.query_one("#line", Static).update(f"bench · minimal textual app, tick {self.n}")


Mini().run()
"""

# Runs wfdash exactly as `python -m wfdash` does, with a meta-path hook that writes an OSC
# sequence into the terminal stream (fd 2, where Textual writes) when `sky` is imported.
SKY_HOOK = """
import os, runpy, sys, threading, time

class _SkyWatch:
    seen = False

    def find_spec(self, name, path=None, target=None):
        if not self.seen and (name == "sky" or name.startswith("sky.")):
            _SkyWatch.seen = True
            note = "%s;%s;%.6f" % (name, threading.current_thread().name, time.monotonic())
            os.write(2, b"\\x1b]7777;bench-import-sky;" + note.encode() + b"\\x07")
        return None

sys.meta_path.insert(0, _SkyWatch())
runpy.run_module("wfdash", run_name="__main__", alter_sys=True)
"""


# --------------------------------------------------------------------------- child hygiene

_children: list[subprocess.Popen[bytes]] = []


def _kill(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group, if any
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _kill_all() -> None:
    while _children:
        _kill(_children.pop())


def _on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def spawn(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(list(argv), start_new_session=True, cwd=ROOT, **kwargs)
    _children.append(proc)
    return proc


def forget(proc: subprocess.Popen[bytes]) -> None:
    _kill(proc)
    with contextlib.suppress(ValueError):
        _children.remove(proc)


def child_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The user's environment minus anything that would change what is measured."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WFDASH_", "TEXTUAL", "SKYPILOT_", "PYTHONPROFILE"))
        and k not in ("NO_COLOR", "COLORTERM", "TERM", "COLUMNS", "LINES", "FORCE_COLOR")
    }
    state = tmp / "state"
    state.mkdir(parents=True, exist_ok=True)
    config = tmp / "config.toml"
    config.touch()
    env.update(
        TERM="xterm-256color",
        WFDASH_STATE_DIR=str(state),
        WFDASH_CONFIG=str(config),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


# --------------------------------------------------------------------------- the pty


def _set_ctty() -> None:  # runs in the child after setsid(): the pty becomes its terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyChild:
    """A child on a fresh pty of COLSxROWS; the parent reads (and counts) its output."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], keep: int = 4 << 20) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.master = master
        self.keep = keep  # raw bytes kept in memory (for marker search and diagnostics)
        self.raw = bytearray()
        self.total = 0
        self.eof = False
        self.spawned = time.monotonic()
        try:
            self.proc = spawn(
                argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                preexec_fn=_set_ctty,  # the parent is single-threaded
            )
        finally:
            os.close(slave)

    def pump(self, timeout: float) -> int:
        """Read what is there (waiting up to ``timeout``); the number of bytes read."""
        if self.eof:
            time.sleep(min(timeout, 0.05))
            return 0
        ready, _, _ = select.select([self.master], [], [], max(0.0, timeout))
        if not ready:
            return 0
        try:
            data = os.read(self.master, 1 << 16)
        except OSError:  # EIO: every slave descriptor closed, the child is gone
            data = b""
        if not data:
            self.eof = True
            return 0
        self.total += len(data)
        if len(self.raw) < self.keep:
            self.raw += data
        return len(data)

    def wait_for(self, pattern: bytes | re.Pattern[bytes], timeout: float) -> float | None:
        """Seconds from spawn until ``pattern`` is in the text (escapes stripped)."""
        deadline = time.monotonic() + timeout
        searched = 0
        while time.monotonic() < deadline and not self.eof:
            got = self.pump(deadline - time.monotonic())
            if not got:
                continue
            # Re-strip a window overlapping the previous chunk: escapes and the marker
            # may straddle read boundaries.
            start = max(0, searched - 4096)
            text = ANSI.sub(b"", bytes(self.raw[start:]))
            found = (pattern in text) if isinstance(pattern, bytes) else pattern.search(text)
            if found:
                return time.monotonic() - self.spawned
            searched = len(self.raw)
        return None

    def drain(self, seconds: float) -> list[int]:
        """Read for ``seconds``; bytes received in each whole second."""
        per_second: list[int] = []
        start = time.monotonic()
        end = start + seconds
        bucket, bucket_end = 0, start + 1.0
        while (now := time.monotonic()) < end:
            if now >= bucket_end:
                per_second.append(bucket)
                bucket, bucket_end = 0, bucket_end + 1.0
            bucket += self.pump(min(end, bucket_end) - now)
        per_second.append(bucket)
        return per_second

    def type(self, keys: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(self.master, keys)

    def quit(self, keys: bytes = b"q", timeout: float = 15.0) -> int | None:
        """Ask the app to quit (reading on, so it never blocks on a full pty), then kill."""
        self.type(keys)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.pump(0.1)
        code = self.proc.poll()
        forget(self.proc)
        with contextlib.suppress(OSError):
            os.close(self.master)
        return code

    def close(self) -> None:
        forget(self.proc)
        with contextlib.suppress(OSError):
            os.close(self.master)

    def tail_text(self, n: int = 600) -> str:
        return ANSI.sub(b"", bytes(self.raw[-8192:])).decode(errors="replace")[-n:]


# --------------------------------------------------------------------------- /proc


def proc_cpu_s(pid: int) -> float:
    """utime+stime of a process (every thread, dead ones included), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def thread_cpu_s(pid: int, tid: int) -> float:
    try:
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def git_revision() -> str:
    """The commit measured, and whether product files differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, cwd=ROOT, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "wfdash"],
            capture_output=True, text=True, cwd=ROOT, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"
    return head + (" + uncommitted changes in wfdash/" if dirty else "")


def busy_others() -> list[str]:
    """Other processes using CPU now (they share the cores with what is measured)."""
    me = {os.getpid(), *(p.pid for p in _children)}
    first: dict[int, tuple[float, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) not in me:
            with contextlib.suppress(OSError, ValueError, IndexError):
                comm = (entry / "comm").read_text().strip()
                first[int(entry.name)] = (proc_cpu_s(int(entry.name)), comm)
    time.sleep(1.0)
    busy = []
    for pid, (cpu, comm) in first.items():
        with contextlib.suppress(OSError, ValueError, IndexError):
            used = proc_cpu_s(pid) - cpu
            if used >= 0.05:
                busy.append(f"{comm}[{pid}] {used * 100:.0f}%")
    return busy


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    section: str
    what: str
    value: str
    target: str = ""
    verdict: str = ""
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *args: Any, **kwargs: Any) -> None:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        line = f"  {row.what}: {row.value}"
        if row.target:
            line += f"   (target {row.target}: {row.verdict})"
        if row.note:
            line += f"   [{row.note}]"
        print(line, flush=True)

    def print(self) -> None:
        print("\n" + "=" * 100)
        print("RESULTS")
        print("=" * 100)
        widths = [5, 58, 24, 14, 6]
        head = ("#", "measurement", "measured", "target", "")
        print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
        print("-" * 100)
        for r in self.rows:
            cells = (r.section, r.what, r.value, r.target, r.verdict)
            print("  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)))
            if r.note:
                print(" " * (widths[0] + 2) + "  " + r.note)
        for note in self.notes:
            print("\n" + textwrap.fill(note, 100, subsequent_indent="  "))


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def fmt_s(values: Sequence[float]) -> str:
    return f"median {statistics.median(values):.3f} s, min {min(values):.3f} s"


# --------------------------------------------------------------------------- 1: first paint


@dataclass
class PaintRun:
    paint: float | None
    data: float | None = None
    exit_code: int | None = None
    sky: str | None = None  # "<module>;<thread>;<monotonic>" when sky was imported
    sky_after_paint_s: float | None = None
    sky_before_paint_bytes: bool | None = None
    tail: str = ""


def run_paint(
    argv: Sequence[str],
    env: dict[str, str],
    marker: bytes,
    *,
    quit_keys: bytes,
    data_marker: re.Pattern[bytes] | None = None,
    linger: float = 1.0,
    timeout: float = 30.0,
) -> PaintRun:
    child = PtyChild(argv, env)
    try:
        paint = child.wait_for(marker, timeout)
        if paint is None:
            return PaintRun(None, tail=child.tail_text())
        paint_offset = len(child.raw)  # the frame holding the marker ends by here
        paint_at = child.spawned + paint
        data = child.wait_for(data_marker, timeout) if data_marker is not None else None
        # Linger (reading) so an early `import sky` would show; quitting within the first
        # instants after the first paint is a separate case (see the report's notes).
        end = time.monotonic() + linger
        while time.monotonic() < end:
            child.pump(end - time.monotonic())
        run = PaintRun(paint, data)
        index = child.raw.find(SKY_OSC)
        if index >= 0:
            stop = child.raw.find(b"\x07", index)
            run.sky = bytes(child.raw[index + len(SKY_OSC) + 1 : stop]).decode()
            run.sky_before_paint_bytes = index < paint_offset
            run.sky_after_paint_s = float(run.sky.rsplit(";", 1)[1]) - paint_at
        run.exit_code = child.quit(quit_keys)
        return run
    finally:
        child.close()


def mini_app_file(tmp: Path) -> Path:
    path = tmp / "mini_textual_app.py"
    path.write_text(MINI_APP)
    return path


def bench_paint(report: Report, runs: int, tmp_root: Path) -> None:
    print(
        f"\n[1] first paint, {runs} runs each, pty {COLS}x{ROWS}, TERM=xterm-256color", flush=True
    )
    mini = mini_app_file(tmp_root)
    demo_argv = [PY, "-m", "wfdash", "demo"]
    mini_argv = [PY, str(mini)]
    demo: list[PaintRun] = []
    base: list[PaintRun] = []
    # One unmeasured run of each first (bytecode and page cache), then interleaved runs so
    # that load from other processes hits both alike.
    for i in range(runs + 1):
        with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
            m = run_paint(mini_argv, child_env(Path(tmp)), MINI_MARKER, quit_keys=b"\x11")
        with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
            d = run_paint(
                demo_argv,
                child_env(Path(tmp)),
                WFDASH_MARKER,
                quit_keys=b"q",
                data_marker=DATA_MARKER,
            )
        label = "warm-up" if i == 0 else f"run {i}"
        print(
            f"  {label}: wfdash demo paint {_s(d.paint)}, data {_s(d.data)}, exit {d.exit_code};"
            f" minimal app paint {_s(m.paint)}",
            flush=True,
        )
        if d.paint is None:
            print("  wfdash demo never painted; its last output:\n" + d.tail)
        if i:
            demo.append(d)
            base.append(m)
    demo_p = [r.paint for r in demo if r.paint is not None]
    base_p = [r.paint for r in base if r.paint is not None]
    if not demo_p or not base_p:
        report.add("1", "first paint", "FAILED: no paint seen", f"<= {PAINT_TARGET_S} s", "MISS")
        return
    med = statistics.median(demo_p)
    report.add(
        "1",
        "wfdash demo: spawn -> 'wfdash ·' on the pty",
        fmt_s(demo_p),
        f"<= {PAINT_TARGET_S} s",
        verdict(med <= PAINT_TARGET_S),
    )
    report.add("1", "baseline: minimal Textual app, same way", fmt_s(base_p))
    report.add(
        "1",
        "ratio wfdash demo / minimal app (medians)",
        f"{med / statistics.median(base_p):.2f}x, +{med - statistics.median(base_p):.3f} s",
    )
    data = [r.data for r in demo if r.data is not None]
    if data:
        report.add("1", "wfdash demo: spawn -> first replica data ('N/M ready')", fmt_s(data))
    failed = [r.exit_code for r in demo if r.exit_code not in (0,)]
    if failed:
        report.notes.append(f"[1] wfdash demo exit codes after 'q' were not all 0: {failed}")

    # Was `sky` imported before the first paint? Demo, then SkyPilot mode.
    sky_checks: tuple[tuple[str, list[str], dict[str, str]], ...] = (
        ("demo", ["demo"], {}),
        (
            "SkyPilot mode (unreachable API server)",
            [],
            {"SKYPILOT_API_SERVER_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"},
        ),
    )
    for label, args, extra in sky_checks:
        with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
            home = Path(tmp) / "home"
            home.mkdir()
            env = child_env(Path(tmp), **extra)
            if extra:
                env["HOME"] = str(home)  # the SDK writes ~/.sky: keep it in the temp dir
            run = run_paint(
                [PY, "-c", SKY_HOOK, *args],
                env,
                WFDASH_MARKER,
                quit_keys=b"q",
                linger=10.0,
            )
        if run.paint is None:
            report.add("1", f"import sky vs first paint, {label}", "FAILED: no paint")
            continue
        if run.sky is None:
            value = f"never imported (paint {run.paint:.3f} s, watched 10 s more)"
            ok = True
        else:
            module, thread, _ = run.sky.split(";")
            when = "BEFORE" if run.sky_before_paint_bytes else "after"
            value = (
                f"{when} paint: {module} at paint{run.sky_after_paint_s:+.3f} s "
                f"on thread {thread!r} (paint {run.paint:.3f} s)"
            )
            ok = not run.sky_before_paint_bytes and thread != "MainThread"
        report.add("1", f"import sky vs first paint, {label}", value, "after paint", verdict(ok))


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on return: nothing listens there


# --------------------------------------------------------------------------- 1b: import costs

IMPORT_PROBE = """
import time
t0 = time.perf_counter()
import wfdash.cli
t1 = time.perf_counter()
import wfdash.ui.app, wfdash.ui.flows
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""
TEXTUAL_PROBE = """
import time
t0 = time.perf_counter()
import textual.app, textual.widgets
print(time.perf_counter() - t0)
"""
# Third-party packages that must wait for the first data or the first action: which of them
# the dashboard's start-up (imports and settings) has loaded by App.run(). Expected: none.
LATE_PACKAGES = ("pydantic", "httpx", "aiohttp", "yaml", "plotext", "sky")
LATE_PROBE = f"""
import sys
import wfdash.cli, wfdash.ui.app, wfdash.ui.flows
from wfdash.config import load_config
load_config()
print(" ".join(p for p in {LATE_PACKAGES!r} if p in sys.modules) or "none")
"""


def _probe(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-c", code], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT, check=True
    )


def compile_wfdash() -> None:
    """Write wfdash's bytecode first, as installing a wheel does (pip compiles it), while
    Textual's is in site-packages already. An editable install has none, and with
    PYTHONDONTWRITEBYTECODE set (as on this machine) every start would compile wfdash's
    modules again (~50 ms): that would measure the checkout, not the product."""
    import compileall

    ok = compileall.compile_dir(ROOT / "wfdash", quiet=1)
    print(f"  wfdash bytecode written first ({'ok' if ok else 'with errors'})", flush=True)


def bench_imports(report: Report, runs: int, tmp_root: Path) -> None:
    """Where the start-up goes before Textual even runs: the demo's imports before
    App.run() (the sandbox, httpx, plotext and sky load after the first paint)."""
    env = child_env(tmp_root / "imports")
    parts: list[list[float]] = [[], []]
    textual_only: list[float] = []
    for _ in range(runs):
        out = _probe(IMPORT_PROBE, env)
        for i, value in enumerate(out.stdout.split()):
            parts[i].append(float(value))
        out = _probe(TEXTUAL_PROBE, env)
        textual_only.append(float(out.stdout))
    late = _probe(LATE_PROBE, env).stdout.strip()
    names = (
        "import wfdash.cli (settings, the event store: sqlite3)",
        "+ import wfdash.ui.app, flows (textual, wfdash's widgets)",
    )
    for name, values in zip(names, parts, strict=True):
        if values:
            report.add("1", name, f"median {statistics.median(values):.3f} s")
    total = sum(statistics.median(v) for v in parts if v)
    report.add(
        "1",
        "all of the demo's imports before App.run() (sum of medians)",
        f"{total:.3f} s",
        note=f"import textual.app+widgets alone: {statistics.median(textual_only):.3f} s",
    )
    report.add(
        "1",
        "  loaded before App.run() of " + ", ".join(LATE_PACKAGES),
        late,
        "none",
        verdict(late == "none"),
    )


# --------------------------------------------------------------------------- 2+3: CPU, bytes


@dataclass
class SteadyRun:
    label: str
    seconds: float
    tui_cpu_pct: float
    tui_main_pct: float
    sandbox_cpu_pct: float
    bytes_per_s: float
    per_second: list[int]
    snapshots: int
    apply_ms: list[float]
    replicas: int
    ready: int
    colours: str  # which SGR colour forms the window's bytes used (a sanity check)
    intervals: list[float]  # seconds between snapshots reaching the UI
    cycle_s: list[float]  # the poller's own cycle time (status + scrapes + derive)

    @property
    def cpu_ms_per_snapshot(self) -> float:
        return 10 * self.tui_cpu_pct * self.seconds / max(self.snapshots, 1)

    @property
    def bytes_per_snapshot(self) -> float:
        return self.bytes_per_s * self.seconds / max(self.snapshots, 1)


class SandboxServer:
    """The fleet in a process of its own, its status served as JSON."""

    def __init__(self, replicas: int, env: dict[str, str], timeout: float = 60.0) -> None:
        self.proc = spawn(
            [PY, THIS, "_sandbox", "--replicas", str(replicas)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.url = ""
        self.lines: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self._readline(deadline - time.monotonic())
            if line is None:
                break
            self.lines.append(line)
            if line.startswith("READY "):
                self.url = line.split()[2]
                return
        forget(self.proc)
        raise RuntimeError("the sandbox process did not get ready:\n" + "\n".join(self.lines))

    def _readline(self, timeout: float) -> str | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
            if not ready:
                continue
            ch = os.read(fd, 1)
            if not ch:
                return buf.decode() or None
            if ch == b"\n":
                return buf.decode()
            buf += ch
        return None

    def close(self) -> None:
        forget(self.proc)


def read_apply_log(path: Path) -> list[tuple[float, float, int, int, float]]:
    """(monotonic time, apply_snapshot ms, replicas, ready, poll cycle s) per snapshot."""
    rows = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 5:
                rows.append(
                    (
                        float(parts[0]),
                        float(parts[1]),
                        int(parts[2]),
                        int(parts[3]),
                        float(parts[4]),
                    )
                )
    return rows


def steady_run(
    label: str,
    argv: Sequence[str],
    env: dict[str, str],
    *,
    seconds: float,
    sandbox_pid: int | None,
    log: Path | None,
    replicas: int,
    quit_keys: bytes,
    marker: bytes,
    warmup_cycles: int = 4,
    keep_stream: Path | None = None,
) -> SteadyRun | None:
    child = PtyChild(argv, env)
    try:
        if child.wait_for(marker, 60) is None:
            print(f"  {label}: never painted; last output:\n{child.tail_text()}")
            return None
        if log is not None:
            # Steady state: every replica READY on screen, then a few more poll cycles
            # (rates need two scrapes; sparklines and plots fill in).
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                child.pump(0.2)
                rows = read_apply_log(log)
                full = [r for r in rows if r[2] == replicas and r[3] == replicas]
                if full:
                    after = [r for r in rows if r[0] >= full[0][0]]
                    if len(after) >= warmup_cycles:
                        break
            else:
                print(f"  {label}: no steady state in 120 s; log: {read_apply_log(log)[-3:]}")
                return None
        else:
            end = time.monotonic() + 3.0
            while time.monotonic() < end:
                child.pump(0.2)
        pid = child.proc.pid
        start_raw = len(child.raw)
        w0 = time.monotonic()
        c0, m0 = proc_cpu_s(pid), thread_cpu_s(pid, pid)
        s0 = proc_cpu_s(sandbox_pid) if sandbox_pid else 0.0
        per_second = child.drain(seconds)
        c1, m1 = proc_cpu_s(pid), thread_cpu_s(pid, pid)
        s1 = proc_cpu_s(sandbox_pid) if sandbox_pid else 0.0
        w1 = time.monotonic()
        wall = w1 - w0
        window = bytes(child.raw[start_raw:])
        if keep_stream is not None:
            keep_stream.write_bytes(window)
        applied = [r for r in read_apply_log(log) if w0 <= r[0] <= w1] if log else []
        run = SteadyRun(
            label=label,
            seconds=wall,
            tui_cpu_pct=100 * (c1 - c0) / wall,
            tui_main_pct=100 * (m1 - m0) / wall,
            sandbox_cpu_pct=100 * (s1 - s0) / wall,
            bytes_per_s=sum(per_second) / wall,
            per_second=per_second,
            snapshots=len(applied),
            apply_ms=[r[1] for r in applied],
            replicas=applied[-1][2] if applied else 0,
            ready=applied[-1][3] if applied else 0,
            colours=colour_forms(window),
            intervals=[b[0] - a[0] for a, b in itertools.pairwise(applied)],
            cycle_s=[r[4] for r in applied],
        )
        code = child.quit(quit_keys)
        if code not in (0, None):
            print(f"  {label}: exit code {code}; last output:\n{child.tail_text()}")
        return run
    finally:
        child.close()


def bench_steady(
    report: Report,
    replicas: int,
    seconds: float,
    tmp_root: Path,
    do_cpu: bool,
    do_bytes: bool,
    keep_stream: Path | None,
) -> None:
    print(
        f"\n[2/3] steady state: {replicas} replicas, interval 2 s, {seconds:g} s windows, "
        f"pty {COLS}x{ROWS}",
        flush=True,
    )
    sandbox_env = child_env(tmp_root / "sandbox")
    server = SandboxServer(replicas, sandbox_env)
    print(f"  sandbox process {server.proc.pid}: {'; '.join(server.lines)}", flush=True)
    colour_modes = [("truecolor", {"COLORTERM": "truecolor", "TERM": "xterm-256color"})]
    if do_bytes:
        colour_modes += [
            ("256 colours", {"TERM": "xterm-256color"}),
            ("16 colours", {"TERM": "xterm-16color"}),
        ]
    runs: list[SteadyRun] = []
    try:
        for label, extra in colour_modes:
            with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
                log = Path(tmp) / "apply.log"
                argv = [
                    PY, THIS, "_tui", "--url", server.url, "--pool-hosts", str(replicas),
                    "--interval", "2", "--log", str(log),
                ]  # fmt: skip
                run = steady_run(
                    f"wfdash, {label}",
                    argv,
                    child_env(Path(tmp), **extra),
                    seconds=seconds,
                    sandbox_pid=server.proc.pid,
                    log=log,
                    replicas=replicas,
                    quit_keys=b"q",
                    marker=WFDASH_MARKER,
                    keep_stream=keep_stream if label == "truecolor" else None,
                )
            if run is not None:
                runs.append(run)
                _print_steady(run)
    finally:
        server.close()
    # Baseline: a minimal Textual app repainting one line once a second.
    mini = mini_app_file(tmp_root)
    with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
        env = child_env(Path(tmp), COLORTERM="truecolor")
        base = steady_run(
            "minimal Textual app, 1 Hz one-line update, truecolor",
            [PY, str(mini), "tick"],
            env,
            seconds=min(seconds, 15.0),
            sandbox_pid=None,
            log=None,
            replicas=0,
            quit_keys=b"\x11",
            marker=MINI_MARKER,
        )
    if base is not None:
        _print_steady(base)

    true = next((r for r in runs if r.label.endswith("truecolor")), None)
    if true is None:
        report.add("2", "TUI CPU", "FAILED: no steady state", f"<= {CPU_TARGET_PCT}%", "MISS")
        return
    if do_cpu:
        report.add(
            "2",
            f"TUI process CPU, {true.ready}/{true.replicas} READY, 2 s interval",
            f"{true.tui_cpu_pct:.2f}% of a core",
            f"<= {CPU_TARGET_PCT}%",
            verdict(true.tui_cpu_pct <= CPU_TARGET_PCT),
            note=(
                f"main (UI) thread {true.tui_main_pct:.2f}%, poller+other threads "
                f"{true.tui_cpu_pct - true.tui_main_pct:.2f}%; {true.snapshots} snapshots in "
                f"{true.seconds:.1f} s; sandbox process (not counted) {true.sandbox_cpu_pct:.2f}%"
            ),
        )
        if true.snapshots:
            spacing = statistics.median(true.intervals) if true.intervals else float("nan")
            at_2s = true.cpu_ms_per_snapshot / 2000 * 100
            report.add(
                "2",
                "  TUI CPU per snapshot (all threads; header ticks included)",
                f"{true.cpu_ms_per_snapshot:.0f} ms",
                note=(
                    f"snapshots arrived every {spacing:.2f} s (median; poll cycle median "
                    f"{statistics.median(true.cycle_s):.2f} s): at exactly 2 s that is "
                    f"{at_2s:.1f}% of a core"
                ),
            )
        if true.apply_ms:
            report.add(
                "2",
                f"apply_snapshot in the real app, {true.replicas} replicas",
                f"median {statistics.median(true.apply_ms):.1f} ms, "
                f"max {max(true.apply_ms):.1f} ms",
            )
        if base is not None:
            report.add(
                "2",
                "baseline: minimal Textual app, 1 Hz update",
                f"{base.tui_cpu_pct:.2f}% of a core",
                note=f"wfdash / baseline = {true.tui_cpu_pct / max(base.tui_cpu_pct, 1e-9):.1f}x",
            )
    if do_bytes:
        for run in runs:
            kbs = run.bytes_per_s / 1000
            is_true = run is true
            report.add(
                "3",
                f"bytes to the terminal, {run.label.split(', ')[1]}",
                f"{kbs:.2f} KB/s",
                f"<= {BYTES_TARGET_KBS:g} KB/s" if is_true else "",
                verdict(kbs <= BYTES_TARGET_KBS) if is_true else "",
                note=(
                    f"{run.bytes_per_snapshot / 1000:.1f} KB per snapshot ({run.snapshots} in "
                    f"{run.seconds:.0f} s; at exactly 2 s ≈ "
                    f"{run.bytes_per_snapshot / 2000:.1f} KB/s); per-second min/median/max "
                    f"{min(run.per_second)}/{int(statistics.median(run.per_second))}/"
                    f"{max(run.per_second)} B"
                ),
            )
        if base is not None:
            report.add(
                "3",
                "baseline: minimal Textual app, 1 Hz update, truecolor",
                f"{base.bytes_per_s / 1000:.2f} KB/s",
                note=f"wfdash truecolor / baseline = "
                f"{true.bytes_per_s / max(base.bytes_per_s, 1e-9):.0f}x",
            )


def colour_forms(stream: bytes) -> str:
    """Counts of 24-bit, 256-colour and 16-colour SGR colours in a stream."""
    counts = {"24-bit": 0, "256": 0, "16": 0}
    for seq in re.findall(rb"\x1b\[([0-9;]*)m", stream):
        params = [int(p) if p else 0 for p in seq.split(b";")]
        i = 0
        while i < len(params):
            p = params[i]
            if p in (38, 48, 58) and i + 1 < len(params):
                if params[i + 1] == 2:
                    counts["24-bit"] += 1
                    i += 5
                    continue
                if params[i + 1] == 5:
                    counts["256"] += 1
                    i += 3
                    continue
            if 30 <= p <= 37 or 40 <= p <= 47 or 90 <= p <= 97 or 100 <= p <= 107:
                counts["16"] += 1
            i += 1
    return "SGR colours: " + ", ".join(f"{k} {v}" for k, v in counts.items())


def _print_steady(run: SteadyRun) -> None:
    extra = f"; {run.colours}"
    if run.snapshots:
        extra += (
            f"; per snapshot {run.cpu_ms_per_snapshot:.0f} ms CPU, "
            f"{run.bytes_per_snapshot / 1000:.1f} KB"
        )
    if run.apply_ms:
        extra += f"; apply_snapshot median {statistics.median(run.apply_ms):.1f} ms"
    if run.intervals:
        extra += (
            f"; snapshot spacing median {statistics.median(run.intervals):.2f} s, poll cycle "
            f"median {statistics.median(run.cycle_s):.2f} s"
        )
    print(
        f"  {run.label}: CPU {run.tui_cpu_pct:.2f}% (main thread {run.tui_main_pct:.2f}%), "
        f"{run.bytes_per_s / 1000:.2f} KB/s over {run.seconds:.1f} s, "
        f"{run.snapshots} snapshots ({run.ready}/{run.replicas} ready){extra}; "
        f"sandbox process {run.sandbox_cpu_pct:.2f}%",
        flush=True,
    )


# --------------------------------------------------------------------------- _sandbox mode


def sandbox_main(replicas: int) -> None:
    """The fleet plus a JSON status endpoint; prints 'READY <n> <url>' once all are READY."""
    from aiohttp import web

    from wfdash.collect.mapping import map_clusters, map_services
    from wfdash.sandbox.fleet import Sandbox, SandboxConfig
    from wfdash.sandbox.skyserve import ReplicaPolicy

    async def run() -> None:
        config = SandboxConfig(
            pool_hosts=replicas,
            policy=ReplicaPolicy(
                min_replicas=replicas, max_replicas=replicas, target_qps_per_replica=None
            ),
            clusters=(),
            preemptions_per_hour=0,
        )
        sandbox = Sandbox(config)
        await sandbox.start()

        async def services(_request: web.Request) -> web.Response:
            return web.json_response(await sandbox.fetch_services())

        async def clusters(_request: web.Request) -> web.Response:
            return web.json_response(await sandbox.fetch_clusters())

        app = web.Application()
        app.add_routes([web.get("/services", services), web.get("/clusters", clusters)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, stop.set)
        try:
            deadline = time.monotonic() + 60
            while len(sandbox.ready_urls()) < replicas and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            # The JSON round trip must not change what wfdash maps out of the records.
            records = await sandbox.fetch_services()
            same = map_services(json.loads(json.dumps(records))) == map_services(records)
            cl = await sandbox.fetch_clusters()
            same = same and map_clusters(json.loads(json.dumps(cl))) == map_clusters(cl)
            print(f"json round trip {'identical' if same else 'DIFFERS'}", flush=True)
            print(f"READY {len(sandbox.ready_urls())} http://127.0.0.1:{port}", flush=True)
            await stop.wait()
        finally:
            await runner.cleanup()
            await sandbox.close()

    asyncio.run(run())


# --------------------------------------------------------------------------- _tui mode


class HttpStatusSource:
    """A StatusSource reading the sandbox process's JSON (made in the poller's loop)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: Any = None

    @property
    def description(self) -> str:
        return "sandbox (separate process)"

    async def _get(self, path: str) -> Any:
        import httpx

        from wfdash.collect.source import SourceError

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=5.0)
        try:
            answer = await self._client.get(self.url + path)
            answer.raise_for_status()
        except httpx.HTTPError as exc:
            raise SourceError(f"{type(exc).__name__}: {exc}") from exc
        return answer.json()

    async def fetch_services(self) -> Any:
        return await self._get("/services")

    async def fetch_clusters(self) -> Any:
        return await self._get("/clusters")


def tui_main(url: str, pool_hosts: int, interval: float, log: Path) -> int:
    """The real dashboard (wfdash.cli.run_tui) on the remote sandbox's status."""
    from wfdash.cli import open_store, run_tui
    from wfdash.collect.kinds import ReplicaStatus
    from wfdash.config import load_config
    from wfdash.control.deploy import DeploymentFiles
    from wfdash.control.skypilot_plane import SkyPilotControlPlane
    from wfdash.ui.app import WfdashApp

    config = load_config(overrides={"interval": interval})
    store = open_store(config.state_dir, demo=True)
    out = log.open("a", buffering=1)
    original = WfdashApp.apply_snapshot

    def timed_apply(self: WfdashApp, snapshot: Any) -> None:
        t0 = time.perf_counter()
        original(self, snapshot)
        ms = (time.perf_counter() - t0) * 1000
        view = self.current
        n = len(view.replicas) if view else 0
        ready = (
            sum(1 for r in view.replicas if r.replica.status is ReplicaStatus.READY) if view else 0
        )
        cycle = snapshot.stats.duration_s
        out.write(f"{time.monotonic():.6f} {ms:.3f} {n} {ready} {cycle:.4f}\n")

    WfdashApp.apply_snapshot = timed_apply  # type: ignore[method-assign]
    try:

        def connect() -> tuple[HttpStatusSource, SkyPilotControlPlane]:
            # Actions are never run here; the plane is only there as in the real app.
            return HttpStatusSource(url), SkyPilotControlPlane(DeploymentFiles.default())

        return run_tui(connect, config, store, pool_hosts=pool_hosts)
    finally:
        store.close()


# --------------------------------------------------------------------------- 4: table


def table_main(big: int, refreshes: int, profile: bool) -> None:
    """In-process refresh timings with ``big`` replicas; prints one JSON line."""
    result = asyncio.run(_table_bench(big, refreshes, profile))
    print("TABLE-JSON " + json.dumps(result), flush=True)


class FleetGen:
    """A big service whose replicas' metrics move a little each poll, like a real fleet."""

    HISTORY = 300  # PollerConfig.history_points: what a fleet running for 10 min holds
    # Histories are tuples, as the poller's views hold them. They were lists: every step
    # then left ~3000 fresh 300-float lists (tuples of floats drop out of the GC's
    # tracking, lists never do), and the next generation-1 collection, which ran inside a
    # timed refresh, traversed all of them: ~17 ms charged to the UI for the generator's
    # own garbage, which the real poller (deque rings, tuple views) does not make.

    def __init__(self, n: int, seed: int = 1, t0: float = 1_700_000_000.0) -> None:
        from wfdash.collect.dialects import Dialect, ReplicaMetrics
        from wfdash.collect.kinds import Layer, ReplicaStatus
        from wfdash.collect.model import Replica

        self.rng = random.Random(seed)
        self.t = t0
        self.Metrics, self.Dialect = ReplicaMetrics, Dialect
        replicas = []
        statuses = [ReplicaStatus.READY] * 94 + [
            ReplicaStatus.STARTING, ReplicaStatus.STARTING, ReplicaStatus.NOT_READY,
            ReplicaStatus.PROVISIONING, ReplicaStatus.PENDING, ReplicaStatus.SHUTTING_DOWN,
        ]  # fmt: skip
        for i in range(1, n + 1):
            status = self.rng.choice(statuses)
            if i % 5 == 0:  # a fifth on the SSH pool, the rest burst on spot
                fields: dict[str, Any] = {
                    "cloud": "SSH", "region": "ssh-hetzner-base", "infra": "SSH (hetzner-base)",
                    "layer": Layer.BASE, "provider": "hetzner-base", "pool": "hetzner-base",
                    "is_spot": False, "instance_type": None,
                }  # fmt: skip
            else:
                cloud = self.rng.choice(("AWS", "GCP"))
                region, zone, itype = (
                    ("us-east-1", "us-east-1a", "r7a.4xlarge")
                    if cloud == "AWS"
                    else ("us-central1", "us-central1-a", "c3d-standard-16")
                )
                fields = {
                    "cloud": cloud, "region": region, "infra": f"{cloud} ({zone})",
                    "layer": Layer.BURST, "provider": cloud.lower(),
                    "is_spot": self.rng.random() < 0.9, "instance_type": itype,
                }  # fmt: skip
            replicas.append(
                Replica(
                    replica_id=i,
                    cluster_name=f"wf-bitnet-{i}",
                    status=status,
                    version=1,
                    endpoint=f"http://10.0.{i // 250}.{i % 250}:8080",
                    launched_at=t0 - self.rng.uniform(300, 86_400),
                    resources="1x[spot](cpus=16, mem=64, ...)",
                    **fields,
                )
            )
        self.replicas = replicas
        self.by_key = {r.key: r for r in replicas}
        scraped = (ReplicaStatus.READY, ReplicaStatus.NOT_READY, ReplicaStatus.STARTING)
        self.scraped = {r.key for r in replicas if r.status in scraped}
        self.state: dict[str, dict[str, Any]] = {}
        for r in replicas:
            if r.key not in self.scraped:
                continue
            qps = self.rng.uniform(0.02, 0.4)
            self.state[r.key] = {
                "qps": qps,
                "ttft": self.rng.uniform(0.3, 2.5),
                "tps": qps * 40,
                "running": self.rng.choice((0, 1, 1, 2)),
                "waiting": self.rng.choice((0, 0, 0, 1, 3)),
                "lat": self.rng.uniform(0.002, 0.03),
                "qh": tuple(self.rng.uniform(0.02, 0.4) for _ in range(self.HISTORY)),
                "th": tuple(self.rng.uniform(0.3, 2.5) for _ in range(self.HISTORY)),
                "ph": tuple(self.rng.uniform(1, 16) for _ in range(self.HISTORY)),
            }
        self.ts = [t0 - 2.0 * (self.HISTORY - i) for i in range(self.HISTORY)]
        self.sq = [self.rng.uniform(50, 150) for _ in range(self.HISTORY)]
        self.s50 = [self.rng.uniform(0.4, 0.9) for _ in range(self.HISTORY)]
        self.s95 = [self.rng.uniform(1.0, 3.0) for _ in range(self.HISTORY)]
        self.views: dict[str, Any] = {}
        for r in replicas:
            self._view(r)

    def _view(self, r: Any) -> None:
        from wfdash.collect.snapshot import ReplicaView

        s = self.state.get(r.key)
        if s is None:
            self.views[r.key] = ReplicaView(replica=r)
            return
        metrics = self.Metrics(
            dialect=self.Dialect.LLAMACPP,
            window_s=60.0,
            qps=s["qps"],
            ttft_p50=s["ttft"] * 0.6,
            ttft_p95=s["ttft"],
            ttft_mean=s["ttft"] * 0.7,
            running=float(s["running"]),
            waiting=float(s["waiting"]),
            kv_usage=0.3,
            gen_tps=s["tps"],
            prompt_tps=s["tps"] * 2,
        )
        self.views[r.key] = ReplicaView(
            replica=r,
            metrics=metrics,
            scrape_latency_s=s["lat"],
            scrape_bytes=4200,
            last_ok=self.t,
            qps_history=tuple(s["qh"]),
            ttft_history=tuple(s["th"]),
            tps_history=tuple(s["ph"]),
        )

    def step(self, share: float) -> None:
        """One poll later: ``share`` of the scraped replicas have new values."""
        self.t += 2.0
        keys = sorted(self.state)
        for key in self.rng.sample(keys, max(1, round(share * len(keys)))):
            s = self.state[key]
            s["qps"] = max(0.0, s["qps"] * self.rng.uniform(0.5, 1.6) + self.rng.uniform(0, 0.05))
            s["ttft"] = self.rng.uniform(0.3, 2.5)
            s["tps"] = s["qps"] * self.rng.uniform(30, 50)
            s["running"] = self.rng.choice((0, 1, 1, 2))
            s["waiting"] = self.rng.choice((0, 0, 0, 1, 3))
            s["lat"] = self.rng.uniform(0.002, 0.03)
            for name, value in (("qh", s["qps"]), ("th", s["ttft"]), ("ph", s["tps"])):
                s[name] = (*s[name][1:], value)
            self._view(self.by_key[key])
        self.ts = [*self.ts[1:], self.t]
        self.sq = [*self.sq[1:], self.rng.uniform(50, 150)]
        self.s50 = [*self.s50[1:], self.rng.uniform(0.4, 0.9)]
        self.s95 = [*self.s95[1:], self.rng.uniform(1.0, 3.0)]

    def snapshot(self) -> Any:
        from wfdash.collect.kinds import Health, ServiceStatus
        from wfdash.collect.model import ReplicaPolicy, Service
        from wfdash.collect.snapshot import ServiceView, Snapshot

        if not hasattr(self, "_service"):
            n = len(self.replicas)
            self._service = Service(
                name="wf-bitnet",
                controller_job_id=1,
                status=ServiceStatus.READY,
                endpoint="http://34.1.2.3:30001",
                version=1,
                active_versions=(1,),
                policy=ReplicaPolicy(text=f"Fixed {n} replicas", min_replicas=n, max_replicas=n),
                target_num_replicas=n,
                uptime_since=self.t - 86_400,
                replicas=tuple(self.replicas),
                health=Health.HEALTHY,
            )
        views = tuple(self.views[r.key] for r in self.replicas)
        qps = sum(v.metrics.qps for v in views if v.metrics and v.metrics.qps is not None)
        n = len(self.replicas)
        view = ServiceView(
            service=self._service,
            replicas=views,
            qps=qps,
            qps_complete=True,
            ttft_p50=self.s50[-1],
            ttft_p95=self.s95[-1],
            gen_tps=qps * 40,
            error_share=0.001,
            history_t=tuple(self.ts),
            qps_history=tuple(self.sq),
            ttft_p50_history=tuple(self.s50),
            ttft_p95_history=tuple(self.s95),
            ready_history=tuple(float(n) for _ in self.ts),
            target_history=tuple(float(n) for _ in self.ts),
        )
        return Snapshot(
            taken_at=self.t,
            source="bench (generated)",
            services=(view,),
            status_ok=True,
            status_at=self.t,
        )


async def _table_bench(big: int, refreshes: int, profile: bool) -> dict[str, Any]:
    import cProfile
    import io
    import pstats

    from wfdash.ui.app import WfdashApp
    from wfdash.ui.replica_table import ReplicaTable

    gen = FleetGen(big)
    app = WfdashApp(make_poller=None, pool_hosts=big // 5, clock=lambda: gen.t)
    out: dict[str, Any] = {"replicas": big}
    async with app.run_test(size=(200, 60)) as pilot:
        await pilot.pause()
        table = app.query_one(ReplicaTable)
        parts: dict[str, float] = {}

        def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0

            return wrapper

        # Instance attributes: the app's own calls go through these timers.
        table.show = timed("show", table.show)  # type: ignore[method-assign]
        app.render_plots = timed("plots", app.render_plots)  # type: ignore[method-assign]
        app._tick_header = timed("header", app._tick_header)  # type: ignore[method-assign]
        app.palette = timed("palette", app.palette)  # type: ignore[method-assign]
        app.cell_styles = timed("cell_styles", app.cell_styles)  # type: ignore[method-assign]

        async def refresh(action: Callable[[], None]) -> dict[str, float]:
            parts.clear()
            t0 = time.perf_counter()
            action()
            t1 = time.perf_counter()
            c1 = time.process_time()
            await pilot._wait_for_screen()  # the messages the update posted
            app.screen._on_timer_update()  # layout + compositor: what a real frame costs
            paint = time.process_time() - c1
            return {
                "apply": (t1 - t0) * 1000,
                "paint": paint * 1000,
                "total": (t1 - t0 + paint) * 1000,
                **{k: v * 1000 for k, v in parts.items()},
            }

        first = await refresh(lambda: app.apply_snapshot(gen.snapshot()))
        out["initial"] = first
        assert table.row_count == big, table.row_count

        async def series(name: str, share: float, count: int, budget: float) -> None:
            """``count`` refreshes, fewer if they take longer than ``budget`` seconds."""
            runs = []
            started = time.monotonic()
            for _ in range(count):
                gen.step(share)
                snap = gen.snapshot()
                runs.append(await refresh(partial(app.apply_snapshot, snap)))
                if time.monotonic() - started > budget:
                    break
            out[name] = runs
            print(
                f"  {name}: {len(runs)} refreshes in {time.monotonic() - started:.0f} s",
                file=sys.stderr,
                flush=True,
            )

        await series("change5", 0.05, refreshes, budget=150)
        # Every row changing: what a real poll does (each sparkline shifts).
        await series("change100", 1.0, 5, budget=60)
        out["sort_qps"] = await refresh(lambda: app.action_sort("qps"))
        await series("sorted_change5", 0.05, max(3, refreshes // 4), budget=60)
        app.action_sort("id")
        await pilot.pause()
        # The same refresh with the cursor scrolled to the middle: work must not grow
        # with the rows above the viewport.
        table.action_cursor_to(big // 2)
        await pilot.pause()
        await series("scrolled_change5", 0.05, max(3, refreshes // 4), budget=60)
        out["css_var_calls"] = _count_css_calls(app, gen)
        if profile:
            app.action_sort("id")
            gen.step(0.05)
            app.apply_snapshot(gen.snapshot())
            await pilot.pause()
            prof = cProfile.Profile()
            for _ in range(2):
                gen.step(0.05)
                snap = gen.snapshot()
                prof.enable()
                app.apply_snapshot(snap)
                await pilot._wait_for_screen()
                app.screen._on_timer_update()
                prof.disable()
            stream = io.StringIO()
            stats = pstats.Stats(prof, stream=stream)
            stats.sort_stats("cumulative").print_stats(35)
            stats.sort_stats("tottime").print_stats(20)
            out["profile"] = stream.getvalue()
    return out


def _count_css_calls(app: Any, gen: FleetGen) -> int:
    count = 0
    original = app.get_css_variables

    def counting() -> Any:
        nonlocal count
        count += 1
        return original()

    app.get_css_variables = counting
    try:
        app.apply_snapshot(gen.snapshot())
    finally:
        del app.get_css_variables
    return count


def bench_table(report: Report, big: int, refreshes: int, profile: bool, tmp_root: Path) -> None:
    print(f"\n[4] table refresh, {big} replicas, run_test size 200x60", flush=True)
    env = child_env(tmp_root / "table")
    argv = [PY, THIS, "_table", "--big", str(big), "--refreshes", str(refreshes)]
    if profile:
        argv.append("--profile")
    proc = spawn(argv, stdout=subprocess.PIPE, env=env)  # stderr: progress, shown live
    try:
        stdout, _ = proc.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        forget(proc)
        report.add("4", "table refresh", "FAILED: timed out after 1800 s")
        return
    forget(proc)
    line = next((s for s in stdout.decode().splitlines() if s.startswith("TABLE-JSON ")), None)
    if line is None:
        report.add("4", "table refresh", f"FAILED (exit {proc.returncode})")
        return
    res = json.loads(line.split(" ", 1)[1])

    def stat(runs: list[dict[str, float]], key: str) -> str:
        values = [r.get(key, 0.0) for r in runs]
        return f"median {statistics.median(values):.1f} ms, max {max(values):.1f} ms"

    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in runs)

    c5 = res["change5"]
    report.add(
        "4",
        f"apply_snapshot, {big} rows, ~5% of values change",
        stat(c5, "apply"),
        f"<= {REFRESH_TARGET_MS:g} ms",
        verdict(med(c5, "apply") <= REFRESH_TARGET_MS),
        note=(
            f"of which ReplicaTable.show {med(c5, 'show'):.1f} ms, plots {med(c5, 'plots'):.1f} "
            f"ms, header {med(c5, 'header'):.1f} ms, palette()+cell_styles() "
            f"{med(c5, 'palette') + med(c5, 'cell_styles'):.1f} ms (medians)"
        ),
    )
    report.add("4", "  ReplicaTable.show alone (within the above)", stat(c5, "show"))
    report.add(
        "4",
        "  the paint after it (messages + layout + compositor, CPU)",
        stat(c5, "paint"),
    )
    report.add(
        "4",
        "  apply_snapshot + paint",
        stat(c5, "total"),
        f"<= {REFRESH_TARGET_MS:g} ms",
        verdict(med(c5, "total") <= REFRESH_TARGET_MS),
    )
    c100 = res["change100"]
    report.add(
        "4",
        "apply_snapshot, every row changes (a real poll: sparklines shift)",
        stat(c100, "total"),
        f"<= {REFRESH_TARGET_MS:g} ms",
        verdict(med(c100, "total") <= REFRESH_TARGET_MS),
        note=f"apply + paint; show {stat(c100, 'show')}, apply {stat(c100, 'apply')}",
    )
    s = res["sort_qps"]
    report.add(
        "4",
        "sort by QPS (action_sort('qps'): relabel + render_all)",
        f"{s['apply']:.1f} ms (+ paint {s['paint']:.1f} ms)",
        f"<= {REFRESH_TARGET_MS:g} ms",
        verdict(s["apply"] <= REFRESH_TARGET_MS),
        note=f"of which ReplicaTable.show {s.get('show', 0):.1f} ms",
    )
    sc = res["sorted_change5"]
    report.add(
        "4",
        "apply_snapshot sorted by QPS, ~5% change (rows reorder)",
        stat(sc, "apply"),
        f"<= {REFRESH_TARGET_MS:g} ms",
        verdict(med(sc, "apply") <= REFRESH_TARGET_MS),
        note=f"show {stat(sc, 'show')}; apply+paint {stat(sc, 'total')}",
    )
    sm = res["scrolled_change5"]
    report.add(
        "4",
        f"apply_snapshot + paint, cursor on row {big // 2} (scrolled), ~5% change",
        stat(sm, "total"),
        f"<= {REFRESH_TARGET_MS:g} ms",
        verdict(med(sm, "total") <= REFRESH_TARGET_MS),
    )
    init = res["initial"]
    report.add(
        "4",
        f"first snapshot ({big} rows)",
        f"{init['apply']:.1f} ms (+ paint {init['paint']:.1f} ms)",
    )
    report.add(
        "4",
        "get_css_variables() calls per apply_snapshot",
        str(res["css_var_calls"]),
        note="each regenerates the theme's whole colour system",
    )
    if "profile" in res:
        print("\n  cProfile of 2 refreshes (5% change, apply + paint):\n")
        print(textwrap.indent(res["profile"], "    "))


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="paint,cpu,bytes,table", help="sections to run")
    parser.add_argument("--runs", type=int, default=5, help="first-paint runs")
    parser.add_argument("--seconds", type=float, default=30.0, help="steady-state window")
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--big", type=int, default=1000, help="replicas for the table bench")
    parser.add_argument("--refreshes", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="cProfile the 1000-row refresh")
    parser.add_argument(
        "--keep-stream", type=Path, help="save the truecolor steady-state pty stream here"
    )
    args = parser.parse_args()
    only = {s.strip() for s in args.only.split(",")}

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    atexit.register(_kill_all)
    report = Report()
    tmp_root = Path(tempfile.mkdtemp(prefix="wfdash-bench-tui-"))
    print(
        f"wfdash at {git_revision()}; "
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load {loadavg()}; "
        f"busy now: {', '.join(busy_others()) or 'nothing'}",
        flush=True,
    )
    try:
        if "paint" in only:
            compile_wfdash()
            bench_paint(report, args.runs, tmp_root)
            bench_imports(report, 3, tmp_root)
        if only & {"cpu", "bytes"}:
            bench_steady(
                report,
                args.replicas,
                args.seconds,
                tmp_root,
                "cpu" in only,
                "bytes" in only,
                args.keep_stream,
            )
        if "table" in only:
            bench_table(report, args.big, args.refreshes, args.profile, tmp_root)
    finally:
        _kill_all()
        shutil.rmtree(tmp_root, ignore_errors=True)
    others = busy_others()
    report.notes.append(
        f"Machine: {os.cpu_count()} cores; load at the end {loadavg()}; other processes busy "
        f"at the end: {', '.join(others) or 'none'}. Figures are wall-clock on a shared "
        "machine: compare each with its same-run baseline."
    )
    report.print()
    return 0


def _child_main(argv: list[str]) -> int:
    mode = argv[0]
    parser = argparse.ArgumentParser(prog=f"bench_tui {mode}")
    if mode == "_sandbox":
        parser.add_argument("--replicas", type=int, required=True)
        args = parser.parse_args(argv[1:])
        sandbox_main(args.replicas)
        return 0
    if mode == "_tui":
        parser.add_argument("--url", required=True)
        parser.add_argument("--pool-hosts", type=int, required=True)
        parser.add_argument("--interval", type=float, default=2.0)
        parser.add_argument("--log", type=Path, required=True)
        args = parser.parse_args(argv[1:])
        return tui_main(args.url, args.pool_hosts, args.interval, args.log)
    if mode == "_table":
        parser.add_argument("--big", type=int, required=True)
        parser.add_argument("--refreshes", type=int, required=True)
        parser.add_argument("--profile", action="store_true")
        args = parser.parse_args(argv[1:])
        table_main(args.big, args.refreshes, args.profile)
        return 0
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        sys.exit(_child_main(sys.argv[1:]))
    sys.exit(main())
