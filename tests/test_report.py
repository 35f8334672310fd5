"""The HTML report: self-contained, escaped, and clickable in a real (headless Chromium) browser."""

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import urllib.request

import pytest

from qdaif import cli
from qdaif.runs import load_run
from qdaif.report import REPORT, json_for_html, lineage_nodes, write_report
from tests.test_plot import make_run, numeric, random_rows

SCRIPT = "<script>window.__pwned = (window.__pwned || 0) + 1;</script>"
IMG = '<img src="nowhere.png" onerror="window.__pwned = 42">'
BREAKOUT = "</script><script>window.__pwned = 7;</script><!--"
EVIL_SEED = 'A seed with <b>bold</b> & <img src=x onerror="window.__pwned = 3"> in it.'


@pytest.fixture
def evil_run(tmp_path):
    """A run whose LM wrote markup: elites in cells 2, 5 and 9, the cell-9 elite bred from the other two; cell 1 empty."""
    measures = [numeric("sentiment", [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])]
    rows = random_rows(measures, 12, batch=4)
    rows = [r for r in rows if r["cell"][0] not in (1, 2, 5, 9)]
    rows[0]["parents"] = ["seed:1"]
    rows += [
        {"text": f"Nice veg {SCRIPT} end", "quality": 0.9, "measures": [0.25], "cell": [2], "iteration": 4,
         "parents": ["seed:0", "seed:1"]},
        {"text": f"Bad veg {IMG}", "quality": 0.8, "measures": [0.55], "cell": [5], "iteration": 4},
    ]
    rows.append({"text": f"Child {BREAKOUT} & \u2028 line", "quality": 0.95, "measures": [0.95], "cell": [9],
                 "iteration": 5, "parents": [len(rows) - 2, len(rows) - 1]})
    return make_run(tmp_path / "evil", measures=measures, rows=rows, seeds=["Plain seed zero.", EVIL_SEED])


def embedded_data(page):
    m = re.search(r'<script type="application/json" id="qdaif-data">(.*?)</script>', page, re.S)
    return json.loads(m.group(1))


def test_json_for_html_cannot_close_its_script_block():
    text = json_for_html({"t": "</script><!-- & -->"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"t": "</script><!-- & -->"}


def test_report_is_self_contained_and_escaped(evil_run):
    path = write_report(evil_run)
    assert path == evil_run / REPORT
    page = path.read_text(encoding="utf-8")
    for markup in (SCRIPT, IMG, BREAKOUT, "<b>bold</b>"):
        assert markup not in page
    assert not re.search(r"<[^>]*onerror", page)  # no tag carries a handler
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page and "document.write" not in page
    # nothing is fetched: no external scripts, styles, images or links
    assert not re.search(r'(src|href)\s*=\s*"(?!data:)', page)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    data = embedded_data(page)
    texts = {n["text"] for n in data["nodes"].values()}
    assert {f"Nice veg {SCRIPT} end", f"Bad veg {IMG}", f"Child {BREAKOUT} & \u2028 line", EVIL_SEED} <= texts
    assert len(data["elites"]) == len(load_run(evil_run).elites)


def test_lineage_reaches_the_seeds(evil_run):
    run = load_run(evil_run)
    nodes = lineage_nodes(run)
    child = next(e for e in run.elites if e["cell"] == [9])
    assert nodes[str(child["id"])]["parents"] == [str(child["id"] - 2), str(child["id"] - 1)]

    def ancestors(key):
        seen, todo = set(), [key]
        while todo:
            k = todo.pop()
            if k not in seen:
                seen.add(k)
                todo.extend(nodes[k].get("parents", []))
        return seen

    assert {"seed:0", "seed:1"} <= ancestors(str(child["id"]))
    for e in run.elites:  # every chain ends at a seed text
        leaves = [k for k in ancestors(str(e["id"])) if not nodes[k].get("parents")]
        assert leaves and all(nodes[k]["kind"] == "seed" for k in leaves)


def test_lineage_marks_what_the_run_cannot_show_as_missing(evil_run):
    """A parent seed the config lacks, and an elite whose history row is gone, become ``missing`` nodes."""
    history = evil_run / "history.jsonl"
    rows = [json.loads(x) for x in history.read_text().splitlines()]
    child = max(rows, key=lambda r: r["id"])  # the cell-9 elite
    rows = [r for r in rows if r["id"] != child["id"]]
    rows[0]["parents"] = ["seed:7"]
    history.write_text("".join(json.dumps(r) + "\n" for r in rows))
    nodes = lineage_nodes(load_run(evil_run))
    gone = nodes[str(child["id"])]
    assert gone["kind"] == "missing" and gone["text"].startswith("Child ") and gone["parents"] == [] and gone["cell"] == [9]
    assert nodes["seed:7"] == {"kind": "missing", "text": ""}
    assert nodes["seed:0"]["kind"] == "seed" and nodes["seed:0"]["text"] == "Plain seed zero."


def test_cli_report_default_and_out(evil_run, tmp_path, capsys):
    cli.main(["report", str(evil_run), "--out", str(tmp_path / "r" / "x.html")])
    assert (tmp_path / "r" / "x.html").is_file()
    cli.main(["report", str(evil_run)])
    assert (evil_run / REPORT).is_file()
    assert str(evil_run / REPORT) in capsys.readouterr().out


# ------------------------------------------------------------- the browser
def find_chromium():
    for name in (os.environ.get("QDAIF_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class DevTools:
    """A minimal Chrome DevTools Protocol client over a WebSocket (RFC 6455, text frames only)."""

    def __init__(self, ws_url, timeout=30.0):
        hostport, path = ws_url.split("//", 1)[1].split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += self._exact(1)
        assert head.split(b"\r\n")[0].split()[1] == b"101", head
        self.last_id, self.events = 0, []

    def close(self):
        self.sock.close()

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the browser closed the DevTools connection")
            buf += chunk
        return buf

    def _send(self, payload):
        mask, n = os.urandom(4), len(payload)
        size = bytes([0x80 | n]) if n < 126 else (bytes([0xFE]) + struct.pack(">H", n) if n < 65536
                                                 else bytes([0xFF]) + struct.pack(">Q", n))
        self.sock.sendall(bytes([0x81]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _message(self):
        parts = []
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n >= 126:
                n = struct.unpack(">H" if n == 126 else ">Q", self._exact(2 if n == 126 else 8))[0]
            payload, opcode = self._exact(n), b0 & 0x0F
            if opcode == 8:
                raise ConnectionError("the browser closed the DevTools connection")
            if opcode in (0, 1):
                parts.append(payload)
                if b0 & 0x80:
                    return json.loads(b"".join(parts))

    def call(self, method, **params):
        self.last_id += 1
        self._send(json.dumps({"id": self.last_id, "method": method, "params": params}).encode())
        while True:
            msg = self._message()
            if msg.get("id") == self.last_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]
            self.events.append(msg)

    def wait_for(self, event, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, e in enumerate(self.events):
                if e.get("method") == event:
                    return self.events.pop(i)
            self.events.append(self._message())
        raise TimeoutError(event)

    def js(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def click(self, selector):
        """Clicks the middle of the element, as a mouse would (press and release)."""
        box = self.js(f"(function(){{var r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                      "return [r.x + r.width / 2, r.y + r.height / 2];})()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)


@pytest.fixture
def browser(tmp_path):
    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium); the report's browser test needs it")
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1200,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port_file, end = profile / "DevToolsActivePort", time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"chromium did not start: {proc.stderr.read().decode(errors='replace')[-2000:]}"
                                   if proc.poll() is not None else "chromium did not open its DevTools port in 60 s")
            time.sleep(0.1)
        port = port_file.read_text().splitlines()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        try:
            yield tools
        finally:
            tools.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_report_in_a_real_browser(evil_run, browser):
    page = write_report(evil_run)
    browser.call("Page.enable")
    browser.call("Page.navigate", url=page.resolve().as_uri())
    browser.wait_for("Page.loadEventFired")
    assert browser.js("document.body.getAttribute('data-ready')") == "1"  # the page script ran to its end

    browser.click('rect[data-cell="9"]')
    assert browser.js("document.getElementById('elite-text').textContent") == f"Child {BREAKOUT} & \u2028 line"
    assert browser.js("document.getElementById('cell-title').textContent").startswith("Cell [9]")
    assert browser.js("document.getElementById('elite-quality').textContent") == "0.9500"
    lineage = browser.js("document.getElementById('lineage').textContent")
    assert f"Nice veg {SCRIPT} end" in lineage and f"Bad veg {IMG}" in lineage  # the parents
    assert EVIL_SEED in lineage and "Plain seed zero." in lineage  # back to the seed texts

    browser.click('rect[data-cell="5"]')
    assert browser.js("document.getElementById('elite-text').textContent") == f"Bad veg {IMG}"
    assert "0.5500" in browser.js("document.getElementById('elite-measures').textContent")

    browser.js("document.querySelectorAll('#lineage details').forEach(function (d) { d.open = true; })")
    time.sleep(0.3)  # an injected <img onerror> would have failed to load and fired by now
    assert browser.js("typeof window.__pwned") == "undefined"
    assert browser.js("document.querySelectorAll('script').length") == 2  # the data block and the page script
    assert browser.js("document.querySelectorAll('img').length") == 2  # the two embedded plots
    assert browser.js("document.querySelectorAll('b').length") == 0
    assert json.dumps(EVIL_SEED) in browser.js("document.getElementById('config').textContent")  # config.yaml as text

    browser.click('rect[data-cell="1"]')  # an empty cell says so
    assert browser.js("document.getElementById('detail-empty').hidden") is False
