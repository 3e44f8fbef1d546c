"""`pack` from an installed package, not a clone: `pip install --target` of the project, then
`python -m fc_chatglm pack` run from that install in an empty folder, as a user who installed fc_chatglm would;
and packing the same sources twice, whatever their times and modes, gives the same bytes and prints the same SHA-256."""
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from fc_chatglm.launch import PACKAGE, PROJECT, SHIPPED

BUILD = ['setup.py', 'settings.ini', 'pyproject.toml', 'MANIFEST.in']  # what pip needs to build the project


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "fc_chatglm installed (not editable) into a folder of its own, built from a copy of the project's files."
    tmp = tmp_path_factory.mktemp('install')
    src = tmp / 'src'
    for f in [*BUILD, *SHIPPED]:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PROJECT / f, src / f)
    (src / 'fc_chatglm').mkdir()
    for p in PACKAGE.glob('*.py'): shutil.copyfile(p, src / 'fc_chatglm' / p.name)
    r = subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-build-isolation',
                        '--no-index', '--target', str(tmp / 'site'), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp / 'site'


def fc_chatglm(site: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    "`python -m fc_chatglm ARGS` with only the install at `site` on the path, in `cwd`, with `env` added to the environment."
    base = {k: v for k, v in os.environ.items() if k != 'SOURCE_DATE_EPOCH'}
    return subprocess.run([sys.executable, '-m', 'fc_chatglm', *args], cwd=cwd, capture_output=True, text=True,
                          env={**base, 'PYTHONPATH': str(site), **env})


def test_the_install_ships_the_connector_files(site):
    for f in SHIPPED:
        assert (site / 'fc_chatglm' / 'connector' / f).read_bytes() == (PROJECT / f).read_bytes(), f


def test_pack_from_an_install(site, tmp_path):
    r = subprocess.run([sys.executable, '-c', 'import fc_chatglm; print(fc_chatglm.__file__)'], cwd=tmp_path,
                       capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': str(site)})
    assert Path(r.stdout.strip()).parent == site / 'fc_chatglm', r.stdout  # the install, not the clone
    r = fc_chatglm(site, tmp_path, 'pack')
    assert r.returncode == 0, r.stderr
    out = tmp_path / 'dist' / 'fc_chatglm.fctor'
    assert r.stdout.startswith(f'wrote {Path("dist/fc_chatglm.fctor")}'), r.stdout
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        assert names[0] == 'connector.json'
        for f in SHIPPED: assert z.read(f) == (PROJECT / f).read_bytes(), f
        modules = sorted(n for n in names if n.startswith('fc_chatglm/'))
        assert modules == sorted(f'fc_chatglm/{p.name}' for p in (site / 'fc_chatglm').glob('*.py'))
        for n in modules: assert z.read(n) == (site / n).read_bytes(), n
    assert sorted(p.name for p in out.parent.iterdir()) == ['fc_chatglm.fctor']  # no temporary file left


def test_pack_refusals_are_one_sentence(site, tmp_path):
    for args, says in [(['--out', str(site / 'fc_chatglm' / 'connector' / 'README.md')], 'one of the files being packed'),
                       (['--config', 'nope.json'], 'nope.json does not exist'),
                       (['--with-model'], 'does not exist')]:
        r = fc_chatglm(site, tmp_path, 'pack', *args)
        assert r.returncode == 1 and r.stdout == '', (args, r.stdout, r.stderr)
        assert says in r.stderr and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr, (args, r.stderr)


def packed(r: subprocess.CompletedProcess, out: Path) -> str:
    "The SHA-256 that `pack` printed, checked to be the file's."
    assert r.returncode == 0, r.stderr
    found = re.findall(r'^SHA-256 ([0-9a-f]{64})$', r.stdout, re.M)
    assert found == [hashlib.sha256(out.read_bytes()).hexdigest()], r.stdout
    return found[0]


def test_pack_twice_gives_the_same_bytes(site, tmp_path):
    (tmp_path / 'a').mkdir(); (tmp_path / 'b').mkdir()
    first = packed(fc_chatglm(site, tmp_path / 'a', 'pack'), tmp_path / 'a' / 'dist' / 'fc_chatglm.fctor')
    sources = [p for p in (site / 'fc_chatglm').rglob('*') if p.is_file()]
    later = time.time() + 86_400 + 3.5  # a day and some seconds later, as after an edit, a checkout or a copy
    for p in sources: os.utime(p, (later, later))
    (site / 'fc_chatglm' / 'cli.py').chmod(0o600)  # and another mode, as a stricter umask or a Windows copy gives
    try: second = packed(fc_chatglm(site, tmp_path / 'b', 'pack'), tmp_path / 'b' / 'dist' / 'fc_chatglm.fctor')
    finally: (site / 'fc_chatglm' / 'cli.py').chmod(0o644)
    assert (tmp_path / 'a' / 'dist' / 'fc_chatglm.fctor').read_bytes() == (tmp_path / 'b' / 'dist' / 'fc_chatglm.fctor').read_bytes()
    assert first == second
    with zipfile.ZipFile(tmp_path / 'b' / 'dist' / 'fc_chatglm.fctor') as z:
        infos = z.infolist()
    names = [i.filename for i in infos]
    assert names[0] == 'connector.json' and names[1:] == sorted(names[1:]), names
    assert {(i.date_time, i.create_system, i.external_attr >> 16) for i in infos} == {((1980, 1, 1, 0, 0, 0), 3, 0o100644)}


def test_pack_takes_its_time_from_source_date_epoch(site, tmp_path, monkeypatch):
    r = fc_chatglm(site, tmp_path, 'pack', SOURCE_DATE_EPOCH='1700000000')
    packed(r, tmp_path / 'dist' / 'fc_chatglm.fctor')
    with zipfile.ZipFile(tmp_path / 'dist' / 'fc_chatglm.fctor') as z:
        assert {i.date_time for i in z.infolist()} == {(2023, 11, 14, 22, 13, 20)}
    from fc_chatglm.launch import entry_time  # in-process: numpy, imported on the way, fails itself on a value that is no number
    from fc_chatglm.schemas import UserError
    for value, when in [('', (1980, 1, 1, 0, 0, 0)), ('0', (1980, 1, 1, 0, 0, 0)), ('1700000000', (2023, 11, 14, 22, 13, 20))]:
        monkeypatch.setenv('SOURCE_DATE_EPOCH', value)
        assert entry_time() == when, value
    monkeypatch.setenv('SOURCE_DATE_EPOCH', 'yesterday')
    with pytest.raises(UserError, match="SOURCE_DATE_EPOCH is 'yesterday', not a time in whole seconds since 1970"): entry_time()
