"""`check` starting and stopping a connector as Fantasy Copilot does on Windows, taken on Linux with a stand-in
PowerShell, and reading a child's pipe in the code page a Windows child writes in; and `check` on what `pack` makes:
a package without weights passes on the demo model, one whose model is there but broken fails with the loader's reason."""
import locale
import os
import re
import shlex
import socket
import sys
import uuid
import zipfile
from pathlib import Path

import psutil
import pytest

from fc_chatglm.check import Launched, Report, _stop, check, pipe_encoding, port_owners
from fc_chatglm.demo import build_demo
from fc_chatglm.launch import pack

# powershell.exe as the app runs it: `-ExecutionPolicy Bypass -Command "<cmd>"` runs <cmd> in a child and stays its
# parent (no exec), so that killing it, as the app does, leaves the child running.
FAKE_POWERSHELL = '''#!/bin/sh
[ $# = 4 ] && [ "$1" = -ExecutionPolicy ] && [ "$2" = Bypass ] && [ "$3" = -Command ] || { echo "unexpected arguments: $*" >&2; exit 64; }
sh -c "$4; exit \\$?"  # a list, so that no shell execs the command: its parent stays a shell, not PowerShell
exit $?
'''
LISTEN = ("python -c 'import socket, time; s = socket.create_server((\"127.0.0.1\", 0)); "
          "print(s.getsockname()[1], flush=True); time.sleep(60)'")  # a connector in small: it owns a port and prints it

posix = pytest.mark.skipif(os.name == 'nt', reason='the stand-in PowerShell is a POSIX shell script')


@pytest.fixture
def powershell(tmp_path, monkeypatch):
    "A stand-in `powershell` first on PATH, beside a `python` that is this one, which that PowerShell finds."
    bin = tmp_path / 'bin'
    bin.mkdir()
    (bin / 'powershell').write_text(FAKE_POWERSHELL)
    (bin / 'python').write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    for f in bin.iterdir(): f.chmod(0o755)
    monkeypatch.setenv('PATH', f'{bin}{os.pathsep}{os.environ["PATH"]}')
    return str(bin / 'powershell')


def running(procs: list[psutil.Process]) -> list[psutil.Process]:
    "Those of `procs` still running (a zombie is not: where nothing reaps orphans, the dead stay listed)."
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE: out.append(p)
        except psutil.Error: pass
    return out


def marked(token: str) -> list[psutil.Process]:
    "The running processes whose environment carries FC_CHECK_TEST=`token`."
    out = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get('FC_CHECK_TEST') == token: out.append(p)
        except psutil.Error: pass
    return running(out)


def refused(port: int) -> bool:
    "Whether nothing listens on 127.0.0.1:`port`."
    try: socket.create_connection(('127.0.0.1', port), timeout=5).close()
    except ConnectionRefusedError: return True
    return False


@posix
def test_stop_kills_the_connector_that_outlives_its_powershell(tmp_path, powershell):
    p = Launched([powershell, '-ExecutionPolicy', 'Bypass', '-Command', LISTEN], tmp_path)
    port = int(p.first_line(30))
    owner, = port_owners(port)
    assert owner.pid != p.proc.pid  # the port is the child's, not PowerShell's
    named = f'{owner.name()} (pid {owner.pid})'
    stopped = p.stop(port)
    assert stopped.code != 0 and stopped.by_port == [named] and stopped.left == []
    assert not running([owner]) and port_owners(port) == [] and refused(port)


@posix
def test_stop_kills_descendants_the_port_does_not_name(tmp_path, powershell):
    p = Launched([powershell, '-ExecutionPolicy', 'Bypass', '-Command', 'sleep 60 & echo started; wait'], tmp_path)
    assert p.first_line(30) == 'started'
    family = psutil.Process(p.proc.pid).children(recursive=True)  # the shell and its sleep
    stopped = p.stop()  # no port: only the kill of PowerShell, which leaves both
    assert len(family) == 2 and stopped.by_port == [] and len(stopped.left) == 2
    assert sorted(int(re.search(r'\(pid (\d+)\)', s)[1]) for s in stopped.left) == sorted(c.pid for c in family)
    assert running(family) == []


@posix
def test_check_warns_of_what_the_app_would_leave_running(tmp_path, powershell):
    p = Launched([powershell, '-ExecutionPolicy', 'Bypass', '-Command', 'sleep 60 & echo started; wait'], tmp_path)
    assert p.first_line(30) == 'started'
    lines = []
    _stop(p, None, set(), True, Report(lines.append))
    assert lines[0].startswith('  ok  stopped by a kill') and len(lines) == 2, lines
    assert lines[1].startswith('warn  ') and 'were killed here' in lines[1] and "on a user's machine they would keep running" in lines[1]


@posix
def test_pipe_lines_are_decoded_in_the_code_page(tmp_path):
    text = '\u4f60\u597d\uff0c\u4e16\u754c'  # written by a Windows child in cp936 (GBK), as Python and PowerShell write to a pipe
    p = Launched([sys.executable, '-c', f"import sys; sys.stdout.buffer.write({text!r}.encode('gbk') + b'\\r\\n')"], tmp_path,
                 encoding='cp936')
    assert p.first_line(30) == text
    p.stop()
    assert (pipe_encoding(windows=True), pipe_encoding(windows=False)) == (locale.getpreferredencoding(False), 'utf-8')


@posix
def test_check_on_windows_goes_through_powershell_and_leaves_nothing(tmp_path, powershell, monkeypatch):
    token = uuid.uuid4().hex
    monkeypatch.setenv('FC_CHECK_TEST', token)  # inherited by whatever check starts, so that a survivor can be found
    lines = []
    report = check(pack(out=tmp_path / 'x.fctor'), demo=True, wait=120, say=lines.append, windows=True)
    said = '\n'.join(lines)
    assert report.failures == [], said
    assert 'started through PowerShell' in said and 'launched \'powershell -ExecutionPolicy Bypass -Command "python -m fc_chatglm --demo"\'' in said
    assert 'outlived its PowerShell (as it does when the app stops it) and was stopped by its port' in said, said
    assert marked(token) == []
    port = int(re.search(r'checking on http://127\.0\.0\.1:(\d+) ', said)[1])
    assert port_owners(port) == [] and refused(port)


@posix
def test_a_connector_started_by_powershell_itself_ends_with_it(tmp_path, powershell, monkeypatch):
    "As on Windows, where python.exe is PowerShell's own child: the connector sees its PowerShell end, and exits (`08e_parent`)."
    Path(powershell).write_text(FAKE_POWERSHELL.replace('sh -c "$4; exit \\$?"', 'eval "$4"'))  # the command, a child of this process
    token = uuid.uuid4().hex
    monkeypatch.setenv('FC_CHECK_TEST', token)
    lines = []
    report = check(pack(out=tmp_path / 'x.fctor'), demo=True, wait=120, say=lines.append, windows=True)
    said = '\n'.join(lines)
    assert report.failures == [] and 'ended by itself with the process the app kills' in said, said
    assert 'outlived' not in said and marked(token) == [], said


def test_check_passes_a_package_without_weights_on_the_demo_model(tmp_path):
    "The README's flow: `pack`, then `check` on its .fctor, whose model/ holds only the README saying what to copy there."
    lines = []
    report = check(pack(out=tmp_path / 'x.fctor'), wait=120, say=lines.append, windows=False)
    said = '\n'.join(lines)
    assert report.failures == [] and report.demo == 'the package holds no model', said
    assert 'note  no model to load: model/ holds only its README.md' in said and 'checked on the demo model' in said, said
    assert "launched 'python -m fc_chatglm --demo'" in said and '  ok  chat-rest POST /chat' in said, said
    assert ': passed, ' in lines[-1] and lines[-1].endswith('; replies from the demo model (the package holds no model)'), lines[-1]


@pytest.fixture(scope='module')
def demo_model(tmp_path_factory) -> dict[str, bytes]:
    "The demo checkpoint's files, as a model folder holds them."
    folder = build_demo(tmp_path_factory.mktemp('demo'))
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def with_model(good: Path, out: Path, files: dict[str, bytes]) -> Path:
    "The package `good` with `files` added under model/, as a user who copied them before packing would have them."
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(out, 'w') as z:
        for n in src.namelist(): z.writestr(n, src.read(n))
        for n, data in files.items(): z.writestr(f'model/{n}', data)
    return out


BROKEN = {  # how the model is broken -> (what to do to its files, what the failure says)
    'config cut short': (lambda f: {**f, 'config.json': f['config.json'][:40]}, 'config.json cannot be read as JSON'),
    'weights cut short': (lambda f: {**f, 'pytorch_model-00001-of-00002.bin': f['pytorch_model-00001-of-00002.bin'][:100_000]},
                          'corrupted'),
    'no tokenizer.model': (lambda f: {k: v for k, v in f.items() if k != 'tokenizer.model'}, 'tokenizer.model is missing'),
}


@pytest.mark.parametrize('how', BROKEN)
def test_check_fails_a_package_whose_model_is_broken(tmp_path, demo_model, how):
    change, says = BROKEN[how]
    lines = []
    report = check(with_model(pack(out=tmp_path / 'x.fctor'), tmp_path / 'broken.fctor', change(demo_model)), wait=120,
                   say=lines.append, windows=False)
    said = '\n'.join(lines)
    assert report.demo is None and "launched 'python -m fc_chatglm'" in said, said  # the model in the package, not the demo's
    assert report.failures and report.failures[0].startswith('chat-rest POST /chat answered with an error: The model could not be loaded'), said
    assert says in report.failures[0], report.failures[0]
