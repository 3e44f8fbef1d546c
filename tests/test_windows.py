"""Windows causes, reproduced on Linux: a Chinese account name in every path, files written without an
explicit encoding. (The others have their tests beside their code: `00_schemas` and `08_launch` for
files saved by Notepad, `tests/test_parent.py` for a killed parent, `tests/test_check_launch.py` for
PowerShell's launch; `nbs/windows.md` lists them all.)"""
import os
import subprocess
import sys
import textwrap

import httpx

from fc_chatglm.demo import build_demo
from fc_chatglm.launch import PROJECT
from fc_chatglm.testing import app_stream, start_connector, wait_settled

# SentencePiece's own file opening as it behaves on Windows: the path reaches the C++ library as UTF-8 bytes,
# which the narrow-character file API reads in the ANSI code page, so a non-ASCII path is "Not found".
WINDOWS_SENTENCEPIECE = textwrap.dedent('''
    import sentencepiece as spm
    _open = spm.SentencePieceProcessor.LoadFromFile
    def _windows(self, path):
        if not str(path).isascii(): raise OSError(f'Not found: "{path}": No such file or directory Error #2')
        return _open(self, path)
    spm.SentencePieceProcessor.LoadFromFile = _windows
''')


def test_a_chinese_account_name_loads_chatglm_and_the_demo(tmp_path, monkeypatch):
    "A model folder and the temporary folder under C:/Users/张伟/..., with SentencePiece's path API failing as on Windows."
    site = tmp_path/'site'; site.mkdir()
    (site/'sitecustomize.py').write_text(WINDOWS_SENTENCEPIECE, encoding='utf-8')
    home = tmp_path/'Users'/'张伟'/'AppData'/'Local'
    (home/'Temp').mkdir(parents=True)
    model = build_demo(home/'模型')
    monkeypatch.setenv('PYTHONPATH', str(site))
    monkeypatch.setenv('TMPDIR', str(home/'Temp'))  # where --demo writes its files (%TEMP% on Windows)
    check = subprocess.run([sys.executable, '-c', 'import sentencepiece as s; s.SentencePieceProcessor(model_file=__import__("sys").argv[1])',
                            str(model/'tokenizer.model')], env={**os.environ, 'PYTHONPATH': str(site)}, capture_output=True, text=True)
    assert 'Not found' in check.stderr  # the stand-in really fails on this path
    for args in (['--model', str(model)], ['--demo']):
        proc, base = start_connector(*args)
        try:
            health = wait_settled(base)
            assert health['status'] == 'ready', health
            body = '{"message": "\\u4f60\\u597d", "settings": {"temperature": 0, "maxResponseTokens": 6}}'.encode()
            replies, done = app_stream(base, '/chat/stream', body)
            assert done and replies, (args, replies)
        finally:
            proc.kill(); proc.wait()


ENCODINGS = textwrap.dedent('''
    import sys, tempfile, warnings
    from pathlib import Path
    from fc_chatglm.demo import build_demo
    from fc_chatglm.launch import pack, read_config
    from fc_chatglm.load import LoadOptions, load_engine
    from fc_chatglm.schemas import ChatRequest
    warnings.simplefilter('error', EncodingWarning)  # after the imports: only what fc_chatglm does from here on
    home = Path(tempfile.mkdtemp())/'张伟'
    build_demo(home/'model')
    (home/'config.json').write_text('{"model": "model", "device": "cpu"}', encoding='utf-8')
    settings = read_config(home/'config.json')
    engine = load_engine(settings.load_options())
    engine.generate(ChatRequest(message='你好', settings={'temperature': 0, 'maxResponseTokens': 4}))
    pack(home/'fc_chatglm.fctor', config=home/'config.json', model=home/'model')
    print('no file opened in the locale encoding')
''')


def test_files_are_written_and_read_as_utf8_whatever_the_locale():
    "Python opens a text file in the locale's code page where no encoding is given (cp936, cp1252 on Windows): every file of ours names UTF-8."
    r = subprocess.run([sys.executable, '-X', 'warn_default_encoding', '-c', ENCODINGS], cwd=PROJECT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and 'no file opened' in r.stdout, r.stderr[-3000:]


def test_a_localhost_base_url_answers_on_both_loopback_addresses():
    "`localhost` is 127.0.0.1 and ::1; some Windows clients try ::1 first."
    proc, base = start_connector('--demo', '--host', 'localhost')
    try:
        port = int(base.rsplit(':', 1)[1])
        for url in (f'http://127.0.0.1:{port}', f'http://[::1]:{port}', base):
            assert httpx.get(url + '/health', timeout=10).status_code == 200, url
    finally:
        proc.kill(); proc.wait()
