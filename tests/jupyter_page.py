"""A real Jupyter server on loopback and headless Chromium driven by Playwright: what the browser test,
the screenshots and the browser benchmark share.

Nothing is downloaded: the browser is Debian's `chromium` package (`apt-get install chromium`), which
Playwright drives through its executable path; `playwright install` is never needed.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
# Chromium on a closed network: no sync, no updates, no QUIC; as root it needs --no-sandbox.
CHROMIUM_ARGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--disable-default-apps', '--disable-dev-shm-usage', '--disable-features=Translate,MediaRouter']


# Kernel code for a notebook cell: a scripted engine whose Markdown reply (code, a table) streams a few
# characters at a time through the real widget. The demo model's replies are noise; this shows what a
# real reply looks like, and is labelled as scripted wherever it is shown.
SCRIPTED = '''import time
from fc_chatglm.engine import Engine, Outcome

REPLY = """Here is a function that counts words, and how long it takes:

```python
def count_words(text: str) -> dict[str, int]:
    counts = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return counts
```

| words | time |
|---:|---:|
| 1,000 | 0.1 ms |
| 1,000,000 | 95 ms |

It is **linear** in the length of the text: each word is looked up once."""

class Scripted(Engine):
    "Not a model: streams REPLY, written in advance, a few characters at a time, to show how a Markdown reply looks."
    name = 'a scripted reply (not a model), to show the Markdown'
    def __init__(self, first=0.04, then=0.005): self.first, self.then = first, then  # seconds between pieces
    def generate(self, request, cancel, on_text):
        t0, n = time.perf_counter(), 0
        pause = self.then if request.history else self.first
        for i in range(0, len(REPLY), 4):
            if cancel.is_set(): return Outcome(REPLY[:i], 'cancelled', tokens=n, seconds=time.perf_counter() - t0)
            on_text(REPLY[i:i + 4]); n += 1; time.sleep(pause)
        return Outcome(REPLY, 'stop', tokens=n, seconds=time.perf_counter() - t0)
'''


def find_chromium() -> str | None:
    "The path of a Chromium to drive, or None: $CHROMIUM, else Debian's /usr/bin/chromium, else one on the PATH."
    for cand in (os.environ.get('CHROMIUM'), '/usr/bin/chromium', shutil.which('chromium'), shutil.which('chromium-browser')):
        if cand and Path(cand).exists(): return cand
    return None


def why_no_browser() -> str | None:
    "Why a browser test cannot run here (None: it can)."
    if find_chromium() is None: return 'Chromium is not installed (Debian: apt-get install -y chromium chromium-driver)'
    for mod, pkg in (('playwright.sync_api', 'playwright'), ('jupyterlab', 'jupyterlab'), ('notebook', 'notebook'), ('anywidget', 'anywidget')):
        try: __import__(mod)
        except ImportError: return f'the Python package {pkg} is not installed (pip install -e ".[dev]")'
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def write_notebook(path: Path, cells: list[str]):
    "A notebook of code cells, with the project's Python 3 kernel."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3 (ipykernel)', 'language': 'python'}
    nbformat.write(nb, path)


class Jupyter:
    "A Jupyter server (JupyterLab and Notebook 7) on 127.0.0.1, a free port and a random token, over a temporary root."
    def __init__(self, root: Path, log: Path):
        self.root, self.port, self.token = root, free_port(), uuid.uuid4().hex
        self.base = f'http://127.0.0.1:{self.port}'
        settings = root.parent/'lab-settings'/'@jupyterlab'/'apputils-extension'
        settings.mkdir(parents=True)  # no news pop-up, no update check: nothing to fetch, nothing covering the page
        (settings/'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
        env = os.environ | {'PYTHONPATH': os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep),
                            'JUPYTERLAB_SETTINGS_DIR': str(root.parent/'lab-settings'),
                            'JUPYTERLAB_WORKSPACES_DIR': str(root.parent/'workspaces'),
                            'JUPYTER_RUNTIME_DIR': str(root.parent/'runtime'), 'PYDEVD_DISABLE_FILE_VALIDATION': '1'}
        self.log = open(log, 'w')
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={self.port}',
             '--ServerApp.port_retries=0', f'--IdentityProvider.token={self.token}', f'--ServerApp.root_dir={root}',
             '--LabApp.news_url=', '--LabServerApp.expose_app_in_browser=True', '--ServerApp.open_browser=False', '--ServerApp.allow_root=True',
             '--LabApp.extension_manager=readonly'],
            cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f'{self.base}/api/status?token={self.token}', timeout=2).read(); break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.close(); raise RuntimeError('Jupyter did not start:\n' + log.read_text()[-3000:])
                time.sleep(0.2)

    def url(self, path: str, ui: str = 'lab') -> str:
        "The address of a notebook in JupyterLab (`ui='lab'`) or Notebook 7 (`'notebook'`)."
        return f'{self.base}/lab/tree/{path}?token={self.token}' if ui == 'lab' else f'{self.base}/notebooks/{path}?token={self.token}'

    def api(self, path: str, method: str = 'GET'):
        "A call to the server's REST API; its JSON answer (None if empty)."
        req = urllib.request.Request(f'{self.base}/api/{path}', method=method, headers={'Authorization': f'token {self.token}'})
        body = urllib.request.urlopen(req, timeout=30).read()
        return json.loads(body) if body else None

    def stop_kernels(self):
        "Shut every running kernel down: the next test starts from fresh ones, and no kernel's threads keep the CPU busy."
        for k in self.api('kernels'): self.api(f"kernels/{k['id']}", 'DELETE')

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try: self.proc.wait(15)
            except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        self.log.close()


@contextmanager
def jupyter(cells: dict[str, list[str]]):
    "A running `Jupyter` whose root holds a notebook of `cells` for each name; closed and removed afterwards."
    with tempfile.TemporaryDirectory(prefix='fc-browser-') as d:
        root = Path(d)/'root'
        root.mkdir()
        for name, code in cells.items(): write_notebook(root/name, code)
        server = Jupyter(root, Path(d)/'jupyter.log')
        try: yield server
        finally: server.close()


@contextmanager
def chromium(width: int = 1100, height: int = 900):
    "A Playwright page in headless Chromium (a fresh profile), which may read and write the clipboard."
    from playwright.sync_api import sync_playwright
    with tempfile.TemporaryDirectory(prefix='fc-chromium-') as profile, sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=find_chromium(), headless=True, args=CHROMIUM_ARGS,
                                                   viewport={'width': width, 'height': height})
        ctx.grant_permissions(['clipboard-read', 'clipboard-write'])
        try: yield ctx.pages[0] if ctx.pages else ctx.new_page()
        finally: ctx.close()


def open_notebook(page, server: Jupyter, path: str, ui: str = 'lab', timeout: float = 90):
    "Open `path` and wait until its kernel is attached and idle (JupyterLab says idle before a kernel is attached)."
    page.goto(server.url(path, ui))
    page.locator('.jp-Notebook .jp-Cell').first.wait_for(timeout=timeout * 1000)
    page.wait_for_function(
        "() => { const k = document.querySelector('.jp-Toolbar-kernelName'); return k && /Python/.test(k.textContent) }",
        timeout=timeout * 1000)
    page.wait_for_function(
        "() => { const s = document.querySelector('.jp-Notebook-ExecutionIndicator');"
        " return s && s.getAttribute('data-status') === 'idle' }", timeout=timeout * 1000)


def run_cell(page, index: int):
    "Run the notebook's `index`th cell as a person does: click in it, Shift+Enter."
    cell = page.locator('.jp-Notebook .jp-Cell').nth(index)
    cell.locator('.cm-content').click()
    page.keyboard.press('Shift+Enter')
    return cell
