"""Run notebooks and keep their outputs in them, or check that the saved outputs are still what the notebooks give.

    python tools/outputs.py nbs/00_schemas.ipynb ...   # run each, save its outputs into it (then nbdev_clean)
    python tools/outputs.py --check                    # run every notebook, compare those that hold outputs; exit 1 where one drifted or failed
    python tools/outputs.py --check nbs/01_history.ipynb

A notebook is read for its outputs as much as for its code, so the outputs are saved in it, where GitHub and the docs
site show them. Each notebook runs as `nbdev_test` runs it (in its folder, cells flagged with `tst_flags` or
`#| eval: false` skipped), so a saved notebook and a tested one agree. `--check` compares each cell's text and
Markdown outputs with a fresh run after `VOLATILE` has replaced what differs between runs by nature (temporary
paths, ports, addresses of objects, ids and times of OpenAI replies, log time stamps); anything else that differs is drift: the notebook's code or the package changed
what a reader sees, and the saved outputs must be made again (the command above). Images and widgets are compared by
kind only. Nothing written to stderr is kept (logs, progress bars). A cell whose output is a timing or depends on the
speed of the machine says `#| output: false`: its output is neither saved nor compared (Quarto does not show it either).

`--check` with no notebook named runs every notebook in nbs/, so it is the notebooks' test run too (a cell that raises
fails it, as under `nbdev_test`); a notebook without saved outputs would be run, not compared.
"""
import argparse
import difflib
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VOLATILE = [  # (pattern, replacement): what differs between two runs of the same notebook by nature
    (re.compile(r'(?:/private)?/tmp/[^\s\'",)\]]*|[A-Za-z]:\\\\?[^\s\'",)\]]*\\\\?Temp\\\\?[^\s\'",)\]]*'), '<tmp>'),
    (re.compile(r' at 0x[0-9a-f]+'), ''),  # an object's address (nbdev_clean drops it from saved outputs)
    (re.compile(r'chatcmpl-[0-9a-f]{32}|cmpl-[0-9a-f]{32}'), 'chatcmpl-<id>'),
    (re.compile(r'\b1[78]\d{8}\b'), '<time>'),  # a Unix time (2023 to 2033): an OpenAI reply's "created"
    (re.compile(r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}'), '<time>'),
    (re.compile(r'((?:127\.0\.0\.1|localhost|\[::1\]|::1)[:/]*)\d{2,5}'), r'\1<port>'),
    (re.compile(r'\bpid[ =]\d+'), 'pid <n>'),
    (re.compile(r'SHA-256 [0-9a-f]{64}'), 'SHA-256 <hash>'),  # a package's: it changes with every change of the sources
]


CHECKOUT = '/path/to/fc_chatglm'  # the project's folder as saved outputs show it: each clone has its own
PYTHON = '/path/to/python'  # and the Python that runs it, which each machine has in its own place


def portable(text: str) -> str:
    "`text` with this clone's folder written as `CHECKOUT`, and this Python as `PYTHON`."
    return text.replace(sys.executable, PYTHON).replace(str(ROOT), CHECKOUT)


def normal(text: str) -> str:
    "`text` with what differs between runs by nature replaced."
    text = portable(text)
    for pattern, repl in VOLATILE: text = pattern.sub(repl, text)
    return text.rstrip()


def kept(outputs: list, source: str) -> list:
    "The outputs saved for a cell: none where it says `#| output: false` (a timing, a figure of this machine), and no stderr (logs, progress bars)."
    if re.search(r'^#\|\s*output:\s*false', source, re.M): return []
    return [o for o in outputs if not (o.get('output_type') == 'stream' and o.get('name') == 'stderr')]


def shown(output: dict) -> str:
    "What a reader sees of one output, as text to compare."
    kind = output.get('output_type')
    if kind == 'stream': return ''.join(output.get('text', ''))
    if kind == 'error': return f"{output.get('ename')}: {output.get('evalue')}"
    data = output.get('data', {})
    for mime in ('text/markdown', 'text/plain'):
        if mime in data: return ''.join(data[mime])
    return ' '.join(sorted(data))  # an image, a widget: its kind


def cell_text(cell: dict) -> str:
    return '\n'.join(shown(o) for o in cell.get('outputs', []))


def run(nb_path: Path) -> dict:
    "The notebook at `nb_path` run as nbdev_test runs it (in a child process), with its outputs."
    code = f'''
import json, os, sys
from pathlib import Path
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.config import get_config
from nbdev.process import NBProcessor
from nbdev.frontmatter import FrontmatterProc
fn = Path({str(nb_path.resolve())!r})
flags = set(get_config().tst_flags.split())
os.environ['IN_TEST'] = '1'
nb = NBProcessor(fn, procs=FrontmatterProc, process=True).nb
def skip(cell):
    if cell.cell_type != 'code': return True
    if 'nbdev_export' + '(' in cell.source: return True
    d = getattr(cell, 'directives_', {{}}) or {{}}
    if d.get('eval:', [''])[0].lower() == 'false': return True
    return flags & d.keys()
k = CaptureShell(fn)
with working_directory(fn.parent): k.run_all(nb, exc_stop=True, preproc=skip)
print('\\x00OUTPUTS' + json.dumps({{c.id: c.get('outputs', []) for c in nb.cells if c.cell_type == 'code' and c.get('id')}}))
'''
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, env={**os.environ, 'PYTHONHASHSEED': '0'})
    marker = r.stdout.rfind('\x00OUTPUTS')
    if r.returncode or marker < 0: raise SystemExit(f'{nb_path} failed to run:\n{r.stderr[-4000:]}')
    return json.loads(r.stdout[marker + len('\x00OUTPUTS'):])


def save(nb_path: Path):
    "Run the notebook and write its outputs into it, cleaned as nbdev_clean cleans."
    outputs = run(nb_path)
    nb = json.loads(nb_path.read_text(encoding='utf-8'))
    for cell in nb['cells']:
        if cell['cell_type'] != 'code': continue
        cell['outputs'] = [{k: v for k, v in o.items() if k != 'execution_count'} | ({'execution_count': None} if 'execution_count' in o else {})
                           for o in kept(outputs.get(cell.get('id'), []), ''.join(cell['source']))]
        cell['execution_count'] = None
    nb_path.write_text(portable(json.dumps(nb, indent=1, ensure_ascii=False)) + '\n', encoding='utf-8')
    subprocess.run(['nbdev_clean', '--fname', str(nb_path)], cwd=ROOT, check=True)
    print(f'{nb_path}: {sum(1 for c in nb["cells"] if c.get("outputs"))} cells with outputs saved')


def check(nb_path: Path) -> list[str]:
    "Each cell whose saved outputs differ from a fresh run's, as a diff; a notebook that holds no outputs is only run."
    nb = json.loads(nb_path.read_text(encoding='utf-8'))
    fresh = run(nb_path)
    if not holds_outputs(nb_path): return []
    drift = []
    for i, cell in enumerate(nb['cells']):
        if cell['cell_type'] != 'code': continue
        source = ''.join(cell['source'])
        saved = normal(cell_text({'outputs': kept(cell.get('outputs', []), source)}))
        now = normal(cell_text({'outputs': kept(fresh.get(cell.get('id'), []), source)}))
        if saved != now:
            diff = '\n'.join(difflib.unified_diff(saved.splitlines(), now.splitlines(), 'saved', 'now', lineterm='', n=1))
            first = ''.join(cell['source']).splitlines()[0][:80] if cell['source'] else ''
            drift.append(f'{nb_path.name}, cell {i} ({first!r}):\n{diff}')
    return drift


def holds_outputs(nb_path: Path) -> bool:
    return any(c.get('outputs') for c in json.loads(nb_path.read_text(encoding='utf-8'))['cells'] if c['cell_type'] == 'code')


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('notebooks', nargs='*', type=Path)
    p.add_argument('--check', action='store_true', help='compare the saved outputs with a fresh run; exit 1 on drift')
    a = p.parse_args()
    if not a.check:
        for nb in a.notebooks: save(nb)
        sys.exit(0)
    notebooks = a.notebooks or sorted((ROOT/'nbs').glob('*.ipynb'))
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # each runs in a process of its own
        drifted = [d for found in pool.map(check, notebooks) for d in found]
    for d in drifted: print(d, end='\n\n')
    compared = sum(map(holds_outputs, notebooks))
    print(f'{len(notebooks)} notebooks run, the {compared} with saved outputs compared: ' + (f'{len(drifted)} cells drifted; run '
          f'`python tools/outputs.py NOTEBOOK` to save them again' if drifted else 'every output as saved'))
    sys.exit(1 if drifted else 0)
