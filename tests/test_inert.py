"Importing the package changes nothing outside it: no registry, environment, logging, thread or dtype setting."
import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = r'''
import importlib, json, logging, os, pkgutil, socket, threading
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

def state():
    return {'environ': dict(os.environ), 'attention': sorted(AttentionInterface._global_mapping),
            'masks': sorted(AttentionMaskInterface._global_mapping), 'root handlers': len(logging.getLogger().handlers),
            'root level': logging.getLogger().level, 'torch threads': torch.get_num_threads(),
            'default dtype': str(torch.get_default_dtype()), 'threads': threading.active_count(),
            'grad': torch.is_grad_enabled()}

before = state()
import fc_chatglm
names = [m.name for m in pkgutil.iter_modules(fc_chatglm.__path__) if m.name != '__main__']
for name in names: importlib.import_module('fc_chatglm.' + name)
after = state()
print(json.dumps({'modules': names, 'changed': {k: [before[k], after[k]] for k in before if before[k] != after[k]}}))
'''


def test_importing_every_module_changes_nothing_outside_the_package(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, 'PYTHONPATH': str(root)}
    r = subprocess.run([sys.executable, '-c', PROBE], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert {'decode', 'engine', 'load', 'server', 'speedups', 'folder', 'testing', 'widget'} <= set(seen['modules'])
    assert seen['changed'] == {}, seen['changed']
