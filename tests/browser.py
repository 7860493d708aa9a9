"""A real headless Chromium (Debian's `chromium`) driven over the Chrome DevTools Protocol's websocket, for tests."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import websocket

__all__ = ["CHROMIUM", "BrowserError", "Page", "chromium_page"]

CHROMIUM = "/usr/bin/chromium"
#: The flags that work on these machines (as root, no GPU, no network beyond loopback).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)


class BrowserError(AssertionError):
    """The page threw, a CDP command failed, or a condition was not reached in time."""


class Page:
    """One tab: CDP commands by name, the events seen so far, script evaluation and waiting."""

    def __init__(self, socket: websocket.WebSocket) -> None:
        self.socket = socket
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Run one CDP command; its result (events that arrive meanwhile are kept in `events`)."""
        command_id = next(self._ids)
        self.socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == command_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 30.0) -> Any:
        """Until the expression is truthy; its value."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise BrowserError(f"{expression!r} was not truthy within {seconds} s; page errors: {self.errors()}")

    def goto(self, url: str) -> None:
        """Navigate and wait until the document has loaded."""
        self.send("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    def set_files(self, selector: str, *paths: Path) -> None:
        """Choose files in an <input type=file> (fires its change event)."""
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    def screenshot(self, path: Path) -> Path:
        """The whole page as a PNG at `path`."""
        metrics = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1}
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[str]:
        """Exceptions the page threw and errors it logged (CSP violations among them)."""
        found = [
            str(e["params"]["exceptionDetails"].get("exception", {}).get("description") or e["params"])
            for e in self.events
            if e["method"] == "Runtime.exceptionThrown"
        ]
        found += [
            e["params"]["entry"]["text"]
            for e in self.events
            if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"
        ]
        return found


def _devtools_endpoint(profile: Path, process: subprocess.Popen[bytes], seconds: float = 30.0) -> tuple[int, str]:
    """The port Chromium chose and its browser websocket's path (--remote-debugging-port=0 writes both to
    DevToolsActivePort)."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrowserError(f"chromium exited with {process.returncode}")
        lines = marker.read_text().split() if marker.exists() else []
        if len(lines) == 2:
            return int(lines[0]), lines[1]
        time.sleep(0.05)
    raise BrowserError("chromium did not open its DevTools port in time")


@contextmanager
def chromium_page(width: int = 1280, height: int = 860) -> Iterator[Page]:
    """A fresh headless Chromium (its own profile in a temporary folder) with one tab of `width` x `height`;
    stopped afterwards."""
    if not Path(CHROMIUM).exists():
        raise BrowserError(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    profile = Path(tempfile.mkdtemp(prefix="aisemble-chromium-"))
    process = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    socket = None
    try:
        port, path = _devtools_endpoint(profile, process)
        browser = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=60)
        try:
            target = Page(browser).send("Target.createTarget", url="about:blank")["targetId"]
        finally:
            browser.close()
        socket = websocket.create_connection(f"ws://127.0.0.1:{port}/devtools/page/{target}", timeout=60)
        page = Page(socket)
        for domain in ("Page", "Runtime", "Log", "DOM"):
            page.send(f"{domain}.enable")
        page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        yield page
    finally:
        if socket is not None:
            socket.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)
