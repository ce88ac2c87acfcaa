"""The report page as a browser shows it: headless Chromium (Debian's `chromium`) loads the file,
and we read back its DOM after the page's scripts ran, the console messages it logged (Chromium
writes them to stderr with --enable-logging=stderr: `...:CONSOLE(line)] "message", source: ...`),
and a screenshot. Used by the report test and to take the README's screenshot."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
_CONSOLE = re.compile(r":CONSOLE(?:\(\d+\)|:\d+)?\]\s*(.*)")  # `INFO:CONSOLE:23] "message", source: …` (older: CONSOLE(23))


@dataclass(frozen=True)
class Rendered:
    dom: str  # document.documentElement.outerHTML after load (and the page's load handlers)
    console: list[str]  # every console message and load error the page caused


def find_chromium() -> str | None:
    """The first headless-capable Chromium on PATH, or None."""
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _run(browser: str, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="ganaug-chromium-") as profile:  # a fresh profile: no locks, no state
        command = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
                   "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def console_messages(stderr: str) -> list[str]:
    """The console messages (any level) in Chromium's stderr log: script errors (`Uncaught …`),
    console.error calls and refused loads (the page's CSP blocks any network request) among them."""
    return [match.group(1) for match in map(_CONSOLE.search, stderr.splitlines()) if match]


def render(page: str | Path, browser: str | None = None, timeout: float = 120) -> Rendered:
    """Load `page` (a local HTML file) and return its DOM after load and its console messages."""
    browser = browser or find_chromium()
    if browser is None:
        raise FileNotFoundError(f"no Chromium found on PATH (looked for {', '.join(BROWSERS)}); "
                                "on Debian: apt-get install chromium")
    url = Path(page).resolve().as_uri()
    done = _run(browser, ["--virtual-time-budget=5000", "--dump-dom", url], timeout)
    if done.returncode != 0 or "<html" not in done.stdout:
        raise RuntimeError(f"{browser} --dump-dom {url} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return Rendered(done.stdout, console_messages(done.stderr))


def screenshot(page: str | Path, out: str | Path, width: int = 1280, height: int = 2000, browser: str | None = None,
               timeout: float = 120) -> Path:
    """A PNG of the top `width` x `height` CSS pixels of `page` as Chromium draws it."""
    browser = browser or find_chromium()
    if browser is None:
        raise FileNotFoundError(f"no Chromium found on PATH (looked for {', '.join(BROWSERS)})")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _run(browser, ["--hide-scrollbars", f"--window-size={width},{height}", "--virtual-time-budget=5000",
                          f"--screenshot={out}", Path(page).resolve().as_uri()], timeout)
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{browser} --screenshot of {page} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m ganaug.report.browser PAGE [--screenshot OUT]`: load the page in headless Chromium,
    print its console messages and how many figures decoded; exit 1 if any message or figure failed."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ganaug.report.browser", description=main.__doc__)
    parser.add_argument("page", help="the HTML file (e.g. reports/index.html)")
    parser.add_argument("--screenshot", help="also write a PNG of the page's top (e.g. docs/report.png)")
    parser.add_argument("--width", type=int, default=1280, help="CSS pixels (default: 1280)")
    parser.add_argument("--height", type=int, default=2000, help="CSS pixels (default: 2000)")
    args = parser.parse_args(argv)
    rendered = render(args.page)
    decoded = re.search(r'data-figures="(\d+)/(\d+)"', rendered.dom)
    for message in rendered.console:
        print(f"console: {message}")
    print(f"figures decoded: {decoded.group(0) if decoded else 'unknown (no data-figures mark: not a report page?)'}")
    if args.screenshot:
        print(f"wrote {screenshot(args.page, args.screenshot, args.width, args.height)}")
    return 1 if rendered.console or not decoded or decoded.group(1) != decoded.group(2) else 0


if __name__ == "__main__":
    raise SystemExit(main())
