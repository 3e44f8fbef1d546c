"""`pack` from an installed package, not a clone: `pip install --target` of the project, then
`python -m fc_chatglm pack` run from that install in an empty folder, as a user who installed fc_chatglm would."""
import os
import shutil
import subprocess
import sys
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


def fc_chatglm(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    "`python -m fc_chatglm ARGS` with only the install at `site` on the path, in `cwd`."
    return subprocess.run([sys.executable, '-m', 'fc_chatglm', *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, 'PYTHONPATH': str(site)})


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
