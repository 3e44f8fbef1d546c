"""A connector stopped as Fantasy Copilot stops it: the app kills the PowerShell it started, not PowerShell's
children. The connector, still importing its libraries, must end with that shell when the shell is PowerShell or
when `--exit-with-parent` asks for it, and must outlive any other shell (a server started with nohup)."""
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fc_chatglm.launch import PROJECT

pytestmark = pytest.mark.skipif(os.name != 'posix', reason='starts the connector through a POSIX shell')


def gone(p: psutil.Process) -> bool:
    "Whether `p` has ended (a zombie that nobody reaps has ended too)."
    try: return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess: return True


def wait_for(test, timeout: float):
    "Call `test` every 50 ms until it returns something true, or `timeout` seconds pass; its last value."
    deadline = time.monotonic() + timeout
    while not (value := test()) and time.monotonic() < deadline: time.sleep(0.05)
    return value


class Launch:
    "`SHELL -c 'python -m fc_chatglm --demo --port 0 ... & wait'` in the project folder, as PowerShell -Command runs it; the connector is the shell's child."
    def __init__(self, shell: str, tmp_path: Path, *options: str, path: str = ''):
        env = {**os.environ, 'PYTHONUNBUFFERED': '1',
               'PYTHONPATH': os.pathsep.join(p for p in (str(PROJECT), path, os.environ.get('PYTHONPATH', '')) if p)}
        line = ' '.join(shlex.quote(a) for a in [sys.executable, '-m', 'fc_chatglm', '--demo', '--port', '0', *options])
        self.out, self.err = tmp_path / 'stdout', tmp_path / 'stderr'
        with open(self.out, 'wb') as out, open(self.err, 'wb') as err:
            self.shell = subprocess.Popen([shell, '-c', f'{line} & wait'], cwd=PROJECT, env=env,
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.connector = wait_for(self.child, 5)
        if not self.connector: self.shell.kill(); self.shell.wait(5); raise AssertionError('the shell started no connector')

    def child(self):
        try: return next(iter(psutil.Process(self.shell.pid).children()), None)
        except psutil.NoSuchProcess: return None

    def importing_torch(self) -> bool:
        "Whether the connector has begun to load PyTorch's libraries: the parent's watch, started before, is on."
        try: return any('torch' in m.path for m in self.connector.memory_maps())
        except psutil.Error: return False

    def kill_shell(self):
        "What the app does to stop a connector: kill the shell alone, at once."
        self.shell.send_signal(signal.SIGKILL); self.shell.wait(5)

    def close(self):
        for kill in (self.shell.kill, lambda: self.connector.kill()):
            try: kill()
            except (OSError, psutil.NoSuchProcess): pass
        self.shell.wait(5)
        wait_for(lambda: gone(self.connector), 5)


@pytest.fixture
def launch(tmp_path):
    "Start connectors through a shell; kill whatever is left at the end."
    started = []
    def start(shell: str, *options: str, path: str = '') -> Launch:
        started.append(Launch(shell, tmp_path, *options, path=path)); return started[-1]
    yield start
    for l in started: l.close()


def port_open(port: int) -> bool:
    try: socket.create_connection(('127.0.0.1', port), timeout=2).close(); return True
    except OSError: return False


def test_the_connector_ends_with_its_shell_when_asked(launch):
    l = launch('sh', '--exit-with-parent')
    assert wait_for(l.importing_torch, 10)  # a fraction of a second in; importing takes seconds more
    first = l.out.read_text()
    port = int(re.search(r'http://127\.0\.0\.1:(\d+)', first).group(1))  # the stand-in answers meanwhile (`09_main`)
    assert first.startswith('fc_chatglm: starting') and port_open(port), first
    l.kill_shell()
    assert wait_for(lambda: gone(l.connector), 2), 'the connector outlived the shell that started it'
    assert 'listening on' not in l.out.read_text(), l.out.read_text()  # killed before the server proper took the port
    assert 'has ended' in l.err.read_text(), l.err.read_text()
    # The leader of a process whose threads are still ending already reads as a zombie; the socket closes with the
    # last thread, a moment later (a thread in the middle of a page fault while importing torch ends last).
    assert wait_for(lambda: not port_open(port), 2), 'the port outlived the connector'


def test_the_connector_ends_with_powershell_unasked(launch, tmp_path):
    pwsh = tmp_path / 'pwsh'  # a shell that is named as the app's PowerShell is
    pwsh.symlink_to(shutil.which('sh'))
    l = launch(str(pwsh))
    assert l.connector.parent().name() == 'pwsh'
    assert wait_for(l.importing_torch, 10)
    l.kill_shell()
    assert wait_for(lambda: gone(l.connector), 2), 'the connector outlived the PowerShell that started it'
    assert 'listening on' not in l.out.read_text(), l.out.read_text()


def test_the_connector_outlives_any_other_shell(launch):
    l = launch('sh')
    assert wait_for(l.importing_torch, 10)
    l.kill_shell()
    time.sleep(1.5)  # longer than a watcher takes to notice
    assert not gone(l.connector), 'the connector ended with a shell that is not PowerShell, unasked'


def test_the_stand_in_server_ends_with_its_shell_when_asked(launch, tmp_path):
    shadow = tmp_path / 'shadow' / 'torch'  # PyTorch missing: the stand-in server answers instead (`08d_rescue`)
    shadow.mkdir(parents=True)
    (shadow / '__init__.py').write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    l = launch('sh', '--exit-with-parent', path=str(shadow.parent))
    assert wait_for(lambda: 'listening on' in l.out.read_text(), 30), (l.out.read_text(), l.err.read_text())
    l.kill_shell()
    assert wait_for(lambda: gone(l.connector), 2), 'the stand-in server outlived the shell that started it'
    assert 'PyTorch is not installed' in l.err.read_text() and 'has ended' in l.err.read_text(), l.err.read_text()
