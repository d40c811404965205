"""Optional py-spy sampling of the server during a measurement window.

`evflex bench ... --profile DIR` records the server with py-spy (collapsed-stack
"raw" format, which flamegraph.pl / speedscope read) and folds the stacks into
the functions that own the most CPU: *self* (the leaf frame, where the time is
spent) and *inclusive* (anywhere on the stack, what a call costs in total).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_PREFIXES = ("site-packages/", "/src/", "/lib/python3")


def py_spy() -> str | None:
    """The py-spy executable: next to this interpreter (the venv) or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def _short(frame: str) -> str:
    """`fn (/long/path/site-packages/pkg/mod.py:12)` → `fn (pkg/mod.py:12)`."""
    name, sep, where = frame.partition(" (")
    if not sep:
        return frame
    for prefix in _PREFIXES:
        cut = where.rfind(prefix)
        if cut >= 0:
            where = where[cut + len(prefix) :]
            break
    return f"{name} ({where}"


_LOOP_ENTRIES = ("Runner.run ", "BaseEventLoop.run_forever ", "BaseEventLoop.run_until_complete ")
_THREAD_ENTRY = "Thread.run "
_NATIVE = "<event loop, native: epoll, sockets, picows framing>"


def _below_entry(frames: list[str]) -> tuple[str, list[str]]:
    """(entry point, the frames below the process's own plumbing) of one stack.

    Everything above the event loop (runpy, typer, uvloop.run) is the same in every
    sample and says nothing; below it the first frame is what the loop was doing.
    """
    for i in range(len(frames) - 1, -1, -1):
        frame = frames[i]
        if frame.startswith(_LOOP_ENTRIES):
            below = frames[i + 1 :]
            return (below[0] if below else _NATIVE), below
        if frame.startswith(_THREAD_ENTRY):
            below = frames[i + 1 :]
            return "[thread] " + (below[0] if below else "?"), below
    # e.g. SQLAlchemy's greenlets: py-spy sees them without the loop underneath
    return "[other stack: greenlet or not unwound]", frames


def summarize_collapsed(text: str, top: int = 20) -> dict[str, Any]:
    """Self, inclusive and per-entry-point CPU shares per function from collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    entries: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # the first element is the thread ("process 1:\"python\"" or similar): skip it
        frames = [_short(f) for f in stack.split(";") if f and " (" in f]
        if not frames:
            continue
        total += count
        entry, below = _below_entry(frames)
        entries[entry] += count
        own[frames[-1] if below or entry != _NATIVE else _NATIVE] += count
        for frame in set(below):
            inclusive[frame] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": fn, "share": round(n / total, 4)} for fn, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "self": share(own),
        "inclusive": share(inclusive),
        "by_entry": share(entries),
    }


class Profiler:
    """One py-spy recording of `pid` for `duration_s`, written to `output`."""

    def __init__(
        self, pid: int, output: Path, duration_s: float | None, rate_hz: int = 200
    ) -> None:
        self.pid = pid
        self.output = output
        self.duration_s = duration_s
        self.rate_hz = rate_hz
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> bool:
        exe = py_spy()
        if exe is None:
            return False
        self.output.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            exe,
            "record",
            "--pid",
            str(self.pid),
            "--rate",
            str(self.rate_hz),
            "--format",
            "raw",
            "--function",  # aggregate by function, not by line
            "--nonblocking",  # do not pause the server to sample it
            "--output",
            str(self.output),
        ]
        if self.duration_s is not None:
            cmd[2:2] = ["--duration", str(max(1, round(self.duration_s)))]
        # py-spy inherits the loader's core: it never competes with the server
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return True

    async def finish(self, timeout_s: float = 30.0) -> dict[str, Any] | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        loop = asyncio.get_running_loop()
        if self.duration_s is None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            await asyncio.wait_for(loop.run_in_executor(None, proc.wait), timeout_s)
        except TimeoutError:
            proc.kill()
            await loop.run_in_executor(None, proc.wait)
            return {"error": "py-spy did not finish in time"}
        if proc.returncode != 0 or not self.output.exists():
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            return {"error": f"py-spy exited with {proc.returncode}: {err[-500:]}"}
        summary = summarize_collapsed(self.output.read_text(errors="replace"))
        summary["file"] = str(self.output)
        return summary
