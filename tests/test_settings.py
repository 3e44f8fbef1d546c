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


def test_the_kept_cache_budget_is_a_setting_of_config_json_and_the_command_line(tmp_path):
    import torch
    from fc_chatglm.cli import parse, settings
    from fc_chatglm.demo import load_demo
    from fc_chatglm.engine import KEPT_MB, GLMFormat, TransformersEngine
    from fc_chatglm.launch import ConnectorSettings
    assert ConnectorSettings().kept_cache_mb == KEPT_MB == 1024  # about 18,700 tokens of ChatGLM2-6B's float32 cache
    cfg = tmp_path / 'config.json'
    cfg.write_text(json.dumps({'kept_cache_mb': 256}))
    s, problem = settings(parse(['--config', str(cfg)])[1])
    assert (s.kept_cache_mb, problem) == (256, None)
    s, problem = settings(parse(['--config', str(cfg), '--kept-cache-mb', '64'])[1])  # the command line wins
    assert (s.kept_cache_mb, problem) == (64, None)
    model, tok = load_demo(tmp_path / 'demo')
    engine = TransformersEngine(model, GLMFormat(tok), decode='direct', max_batch=2, kept_cache_mb=s.kept_cache_mb)
    assert engine.batcher.kept.budget == 64 * 2**20
    assert engine.batch(3, 0) == 3 and engine.batcher.kept.budget == 0  # 0: the latest conversation's cache only
    assert TransformersEngine(model, GLMFormat(tok), decode='direct', max_batch=2).batcher.kept.budget == 2**30


def test_a_bad_kept_cache_budget_is_refused_saying_what_to_write(tmp_path, capsys):
    import pytest
    from fc_chatglm.cli import parse
    from fc_chatglm.demo import load_demo
    from fc_chatglm.engine import GLMFormat, TransformersEngine
    from fc_chatglm.launch import read_config
    from fc_chatglm.schemas import UserError
    cfg = tmp_path / 'config.json'
    for value, said in ((-1, 'kept_cache_mb: Input should be greater than or equal to 0'),
                        ('1 GB', 'kept_cache_mb: Input should be a valid integer'), (0.5, 'kept_cache_mb: Input should be a valid integer')):
        cfg.write_text(json.dumps({'kept_cache_mb': value}))
        with pytest.raises(UserError) as e: read_config(cfg)
        assert said in str(e.value) and 'restart the connector' in str(e.value), str(e.value)
    for value in ('-5', '1GB'):
        with pytest.raises(SystemExit): parse(['--kept-cache-mb', value])
        assert f"argument --kept-cache-mb: '{value}' is not a whole number of megabytes, 0 or more" in capsys.readouterr().err
    model, tok = load_demo(tmp_path / 'demo')
    with pytest.raises(UserError, match='kept_cache_mb is -1: it must be a whole number of megabytes, 0 or more'):
        TransformersEngine(model, GLMFormat(tok), decode='direct', max_batch=2, kept_cache_mb=-1)


def test_a_connector_with_a_bad_kept_cache_budget_stays_up_and_says_what_to_fix(tmp_path):
    folder = connector_folder(tmp_path, json.dumps({'kept_cache_mb': -1, 'embedding': 'off'}))
    proc, base = start_connector('--demo', cwd=folder)
    try:
        h = wait_settled(base)
        assert h['status'] == 'failed' and 'kept_cache_mb: Input should be greater than or equal to 0' in h['error'], h
    finally:
        proc.kill(); proc.wait()
