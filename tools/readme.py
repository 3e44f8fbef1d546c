"""Write README.md from nbs/index.ipynb: markdown cells as they are, code cells as Python blocks with
their text output, `#| hide` cells left out. (nbdev_readme does the same through Quarto, which is not
available from the package registries; this keeps the README generated, not hand-written.)

    python tools/readme.py          # write README.md
    python tools/readme.py --check  # exit 1 if README.md is not what the notebook gives"""
import json
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent


def render(nb: dict) -> str:
    parts = []
    for cell in nb['cells']:
        src = ''.join(cell['source']).strip()
        if not src or src.startswith('#| hide'): continue
        if cell['cell_type'] == 'markdown': parts.append(src)
        elif cell['cell_type'] == 'code':
            code = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()
            parts.append(f'```python\n{code}\n```')
            for out in cell.get('outputs', []):
                text = ''.join(out.get('text') or out.get('data', {}).get('text/plain', []))
                if text.strip(): parts.append('    ' + text.strip().replace('\n', '\n    '))
    return '\n\n'.join(parts) + '\n'


if __name__ == '__main__':
    readme = render(json.loads((root/'nbs'/'index.ipynb').read_text(encoding='utf-8')))
    if '--check' in sys.argv:
        same = (root/'README.md').read_text(encoding='utf-8') == readme
        print('README.md is in sync with nbs/index.ipynb' if same else 'README.md differs from nbs/index.ipynb: run python tools/readme.py')
        sys.exit(0 if same else 1)
    (root/'README.md').write_text(readme, encoding='utf-8')
