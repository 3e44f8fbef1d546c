"""`config.json`, the file Fantasy Copilot opens for the user to edit (the manifest's `config_path`): a real
connector process started in a connector folder, as the app starts it, reads it."""
import json
import shutil

import httpx

from fc_chatglm.launch import PROJECT
from fc_chatglm.testing import start_connector, wait_settled


def connector_folder(tmp_path, config: str):
    "A connector folder as the app unpacks it, with `config` as its config.json."
    shutil.copy(PROJECT / 'connector.json', tmp_path / 'connector.json')
    (tmp_path / 'config.json').write_text(config, encoding='utf-8')
    return tmp_path


def test_config_json_sets_the_model_folder_and_embeddings(tmp_path):
    folder = connector_folder(tmp_path, json.dumps({'model': 'weights', 'embedding': 'off', 'device': 'cpu'}))
    (folder / 'weights').mkdir()
    proc, base = start_connector(cwd=folder)
    try:
        h = wait_settled(base)
        assert h['status'] == 'failed' and str(folder / 'weights') in h['error'] and 'no config.json' in h['error'], h
        assert h['embedding']['status'] == 'off'
        r = httpx.post(base + '/embedding', content=b'hello', headers={'Content-Type': 'text/plain; charset=utf-8'})
        assert r.status_code == 503 and 'Embeddings are off' in r.json()['error']
    finally:
        proc.kill(); proc.wait()


def test_the_command_line_overrides_config_json(tmp_path):
    folder = connector_folder(tmp_path, json.dumps({'device': 'cuda', 'embedding': 'off'}))  # this machine has no CUDA
    proc, base = start_connector('--demo', cwd=folder)
    try:
        h = wait_settled(base)
        assert h['status'] == 'failed' and 'sees no CUDA GPU' in h['error'] and h['embedding']['status'] == 'off', h
    finally:
        proc.kill(); proc.wait()
    proc, base = start_connector('--demo', '--device', 'cpu', '--embedding', 'minilm', cwd=folder)
    try:
        h = wait_settled(base)
        assert (h['status'], h['embedding']['status']) == ('ready', 'idle'), h
    finally:
        proc.kill(); proc.wait()


def test_a_broken_config_json_keeps_the_server_up_and_says_what_to_fix(tmp_path):
    folder = connector_folder(tmp_path, '\ufeff{"model": "D:\\models\\chatglm2", "dtype": "fp16"}')  # Notepad: BOM, raw backslashes
    proc, base = start_connector('--demo', cwd=folder)
    try:
        h = wait_settled(base)
        assert h['status'] == 'failed' and 'doubled backslashes' in h['error'] and 'restart the connector' in h['error'], h
        r = httpx.post(base + '/chat', json={'message': 'hi'}).json()
        assert r['isError'] is True and r['content'].endswith(h['error']), r
        assert httpx.post(base + '/embedding', content=b'hi').status_code == 503
        (folder / 'config.json').write_text('{"dtype": "fp16"}')
    finally:
        proc.kill(); proc.wait()
    proc, base = start_connector('--demo', cwd=folder)
    try:
        h = wait_settled(base)
        assert "dtype: Input should be 'auto', 'float16', 'bfloat16' or 'float32'" in h['error'], h
    finally:
        proc.kill(); proc.wait()
