"""Progress bars that stay readable in logs.

On a terminal: a tqdm bar redrawn in place. Elsewhere (CI, `dvc repro > log.txt`): whole
lines, never carriage returns: nothing for a loop shorter than `log_every_s` seconds (60 by
default), then a line every `log_every_s` and one when it ends; `log_every_s=0` (epoch loops)
writes a line per item. Loops show their
current losses or metrics with `bar.set_postfix(..., refresh=False)`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

QUIET_BELOW = 50_000_000  # pair comparisons (fake x real x pixels) under which a scoring loop shows no bar
LOG_EVERY_S = 60.0  # seconds between lines when the output is not a terminal
LOG_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"  # no bar


class LogLines(tqdm):
    """tqdm writing one full line per refresh (for logs: no carriage returns, no cursor moves)."""

    shown = False  # a line was written: the loop's last state is worth a line too

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # tqdm clearing a finished bar: nothing to clear in a log
            return False
        self.fp.write((self.__str__() if msg is None else msg) + "\n")
        self.fp.flush()
        self.shown = True
        return True

    def close(self) -> None:
        if not self.disable and self.shown and self.n != self.last_print_n:  # the final count, once
            self.display()
        self.leave = False
        super().close()


def is_terminal(stream: Any = None) -> bool:
    stream = stream if stream is not None else sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress(iterable: Iterable | None = None, desc: str = "", total: int | None = None, unit: str = "it",
             log_every_s: float = LOG_EVERY_S, leave: bool = False, **kwargs: Any) -> tqdm:
    """A tqdm bar on a terminal, `LogLines` elsewhere (see the module docstring)."""
    if is_terminal():
        delay = 0 if log_every_s == 0 else 2.0  # no flashing bars for loops of a moment
        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, mininterval=1.0, delay=delay,
                    dynamic_ncols=True, **kwargs)
    # a loop shorter than log_every_s writes nothing (delay); epoch loops (0) write a line per item
    return LogLines(iterable, desc=desc, total=total, unit=unit, mininterval=log_every_s, delay=log_every_s, miniters=1,
                    bar_format=LOG_FORMAT, **kwargs)
