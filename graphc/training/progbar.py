"""The Keras 3 progress bar: ``12/40 ━━━━━━━━━━━━━━━━━━━━ 1s 35ms/step - loss: 0.6931``.

One line per epoch, rewritten in place (carriage return) at most every ``interval`` seconds
and finished with a newline. Verbose 2 prints only the finished line. Metric values are shown
as given (the training loop passes running means), with 4 decimals, or in scientific notation
below 1e-3.
"""

from __future__ import annotations

import math
import sys
import time

_BOLD, _GREEN, _GREY, _RESET = "\x1b[1m", "\x1b[32m", "\x1b[37m", "\x1b[0m"


def format_value(v: float) -> str:
    return f"{v:.4f}" if abs(v) > 1e-3 else f"{v:.4e}"


def format_duration(seconds: float, unit: str) -> str:
    """Time per unit as ``2s/step``, ``35ms/step`` or ``120us/step``."""
    if seconds >= 1 or seconds == 0:
        return f"{seconds:.0f}s/{unit}"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/{unit}"
    return f"{seconds * 1e6:.0f}us/{unit}"


class Progbar:
    """A progress bar over ``target`` steps (None: unknown)."""

    def __init__(self, target: int | None, width: int = 20, verbose: int = 1, interval: float = 0.05,
                 unit_name: str = "step", stream=None):
        self.target = target
        self.width = width
        self.verbose = verbose
        self.interval = interval
        self.unit_name = unit_name
        self.stream = stream
        self._values: dict[str, float] = {}
        self._start = time.time()
        self._last_update = 0.0
        self._after_first: float | None = None
        self._prev_width = 0

    def _out(self):
        return self.stream or sys.stdout

    def _per_step(self, current: int, now: float) -> float:
        if not current:
            return 0.0
        if self._after_first is not None and current > 1:
            return (now - self._after_first) / (current - 1)
        return (now - self._start) / current

    def update(self, current: int, values=None, finalize: bool | None = None) -> None:
        """Show step ``current`` with ``values`` (pairs of name and value)."""
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        for k, v in values or []:
            self._values[k] = float(v)
        now = time.time()
        if current == 1 and self._after_first is None:
            self._after_first = now
        per_step = self._per_step(current, now)
        metrics = "".join(f" - {k}: {format_value(v)}" for k, v in self._values.items())
        if self.verbose == 1:
            if now - self._last_update < self.interval and not finalize:
                return
            if self.target:
                digits = int(math.log10(self.target)) + 1
                count = f"{current:{digits}d}/{self.target}"
                done = int(self.width * current / self.target)
                bar = (f"{_BOLD}{count}{_RESET} " + (f"{_GREEN}{'━' * done}{_RESET}" if done else "")
                       + f"{_GREY}{'━' * (self.width - done)}{_RESET}")
                plain = len(count) + 1 + self.width
            else:
                bar = f"{current:7d}/Unknown"
                plain = len(bar)
            if self.target and not finalize:
                eta = per_step * (self.target - current)
                clock = (f"{eta // 3600:.0f}:{(eta % 3600) // 60:02.0f}:{eta % 60:02.0f}" if eta > 3600 else
                         f"{eta // 60:.0f}:{eta % 60:02.0f}" if eta > 60 else f"{eta:.0f}s")
            else:
                clock = f"{now - self._start:.0f}s"
            info = f" {_BOLD}{clock}{_RESET} {format_duration(per_step, self.unit_name)}{metrics}"
            width = plain + len(info) - len(_BOLD) - len(_RESET)
            line = "\r" + bar + info + " " * max(0, self._prev_width - width)
            self._prev_width = width
            self._out().write(line + ("\n" if finalize else ""))
            self._out().flush()
        elif self.verbose == 2 and finalize and self.target:
            digits = int(math.log10(self.target)) + 1
            self._out().write(f"{current:{digits}d}/{self.target} - {now - self._start:.0f}s - "
                              f"{format_duration(per_step, self.unit_name)}{metrics}\n")
            self._out().flush()
        self._last_update = now
