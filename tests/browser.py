"""A headless Chromium driven over the DevTools protocol (aiohttp websocket): load a page from disk, collect
console errors, and evaluate an expression in it. For tests of the static HTML report."""
from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp


def open_page(chromium: Path, path: Path, expression: str, timeout: float = 60) -> tuple[object, list[str]]:
    """(value of `expression` after the load event, console/log errors seen while loading); `chromium` is the
    binary (the conftest fixture of that name finds it, or skips)."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen([str(chromium), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                 "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.time() + timeout
            while not (port_file.is_file() and port_file.read_text().strip()):
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("chromium did not start")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            return asyncio.run(asyncio.wait_for(_drive(port, path.resolve().as_uri(), expression), timeout))
        finally:
            proc.terminate()
            proc.wait(10)


async def _drive(port: int, url: str, expression: str):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
            page = next(t for t in await response.json() if t["type"] == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids, errors = iter(range(1, 10**6)), []

            async def call(method: str, **params):
                n = next(ids)
                await ws.send_str(json.dumps({"id": n, "method": method, "params": params}))
                while True:
                    message = json.loads((await ws.receive()).data)
                    _collect(message, errors)
                    if message.get("id") == n:
                        return message.get("result", {})

            for domain in ("Page", "Runtime", "Log"):
                await call(f"{domain}.enable")
            await call("Page.navigate", url=url)
            while True:
                message = json.loads((await ws.receive()).data)
                _collect(message, errors)
                if message.get("method") == "Page.loadEventFired":
                    break
            result = await call("Runtime.evaluate", expression=expression, returnByValue=True)
            return result["result"].get("value"), errors


def _collect(message: dict, errors: list[str]) -> None:
    method, params = message.get("method"), message.get("params", {})
    if method == "Runtime.exceptionThrown":
        errors.append(params["exceptionDetails"].get("text", "exception"))
    elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
        errors.append(" ".join(str(a.get("value")) for a in params.get("args", [])))
    elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
        errors.append(params["entry"].get("text", ""))
