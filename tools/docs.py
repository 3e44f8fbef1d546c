"""Build the documentation site from the notebooks into `_docs/`, and check every link in it.

    python tools/docs.py                      # build _docs/, check its links; exit 1 on a failure
    python tools/docs.py --shot PNG           # also open the home page in headless Chromium, check its
                                              # headings against index.ipynb's, and save a screenshot

The notebooks are processed by nbdev exactly as `nbdev_docs` does (hidden cells dropped, the API
documentation of every exported name generated, front matter, the sidebar from `nbs/`), then rendered by
Quarto when `quarto` is on the PATH, as `nbdev_docs` does. Quarto cannot be installed from the package
registries this project may use (PyPI's `quarto-cli` downloads its binary from GitHub while it installs,
and `nbdev_docs` itself downloads Quarto when it is missing), so where it is missing each processed
notebook is rendered by nbconvert (installed with `jupyter`) into a page with the same name Quarto gives
it, a sidebar in the sidebar's order, and links between notebooks rewritten as Quarto rewrites them.

One difference from `nbdev_docs`: to make the API documentation, nbdev runs every cell that holds an
`import` (it takes such a cell for setup code). These notebooks import inside test cells and functions,
and such cells need the cells before them, so the docs run only exported cells, `show_doc` cells and
cells that are imports alone.
"""
import argparse
import ast
import html
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
SITE_FILES = ['docs/images']  # repository folders the pages show (README-relative), copied into the site as they are

STYLE = '''<style>
body {margin: 0}
.fc-site {display: flex; align-items: flex-start}
.fc-nav {position: sticky; top: 0; flex: 0 0 15rem; height: 100vh; overflow-y: auto; box-sizing: border-box;
         padding: 1rem; border-right: 1px solid #ddd; font: 14px/1.5 system-ui, sans-serif; background: #fafafa}
.fc-nav a {display: block; color: #333; text-decoration: none; padding: 2px 4px; border-radius: 3px}
.fc-nav a:hover {background: #eee} .fc-nav a.fc-here {background: #e3f0fc; font-weight: 600}
.fc-nav .fc-site-title {font-size: 1.15rem; font-weight: 700; margin-bottom: .5rem}
.fc-page {flex: 1; min-width: 0; max-width: 60rem; padding: 0 1.5rem}
.fc-page img {max-width: 100%}
.fc-description {font-size: 1.1rem; opacity: .8}
</style>'''


def only_setup(cell) -> bool:
    "Whether a cell that nbdev would run for the API docs is one they need: exported, `show_doc`, or imports alone."
    import warnings
    import nbdev.processors as procs
    with warnings.catch_warnings():  # nbdev's warning on cells with imports and code: those are not run here
        warnings.simplefilter('ignore')
        if not procs._do_eval_nbdev(cell): return False
    if cell.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'}: return True
    trees = cell.parsed_()
    return bool(procs._show_docs(trees)) or all(isinstance(t, (ast.Import, ast.ImportFrom)) for t in trees)


def process() -> tuple[Path, list[str]]:
    "nbdev's processing of the notebooks, as `nbdev_docs` does it (without its Quarto check): the folder, and the sidebar's pages."
    import nbdev.doclinks
    import nbdev.processors as procs
    import yaml
    from nbdev.config import get_config
    from nbdev.quarto import nbdev_sidebar, proc_nbs, refresh_quarto_yml
    cfg = get_config()
    if not hasattr(procs, '_do_eval_nbdev'): procs._do_eval_nbdev = procs._do_eval
    procs._do_eval = only_setup  # in this process: n_workers=0 below
    refresh_quarto_yml()
    nbdev.doclinks._build_modidx()
    nbdev_sidebar.__wrapped__(path=cfg.nbs_path)
    cache = proc_nbs(cfg.nbs_path, n_workers=0, force=True)
    pages = yaml.safe_load((cfg.nbs_path/'sidebar.yml').read_text())['website']['sidebar']['contents']
    pages += sorted(p.name for p in cfg.nbs_path.glob('*.md') if not p.name.startswith('_'))  # Quarto renders these too
    return cache, pages


def front_matter(nb) -> dict:
    "The title, description and output file nbdev put in the processed notebook's first (raw) cell."
    import yaml
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != 'raw' or not first.source.startswith('---'): return {}
    return yaml.safe_load(first.source.strip().strip('-')) or {}


def read_page(path: Path):
    "A processed notebook, or a Markdown page as a notebook of one Markdown cell (its YAML front matter as nbdev's raw cell)."
    import nbformat
    if path.suffix != '.md': return nbformat.read(path, as_version=4)
    text = path.read_text(encoding='utf-8')
    fm, body = ('', text)
    if text.startswith('---'): _, fm, body = text.split('---', 2)
    cells = ([nbformat.v4.new_raw_cell(f'---\n{fm.strip()}\n---')] if fm else []) + [nbformat.v4.new_markdown_cell(body.strip())]
    return nbformat.v4.new_notebook(cells=cells)


def render_with_nbconvert(cache: Path, pages: list[str], out: Path) -> list[str]:
    "Each processed notebook as a page of `out`; returns the notebooks that failed (with why)."
    import nbformat
    from nbconvert import HTMLExporter
    from nbdev.config import get_config
    cfg = get_config()
    site_url = cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/')
    exporter = HTMLExporter(template_name='lab', exclude_input_prompt=True, exclude_output_prompt=True)
    nbs, names, failed = {}, {}, []
    for page in pages:
        nb = read_page(cache/page)
        fm = front_matter(nb)
        nbs[page], names[page] = (nb, fm), fm.get('output-file', Path(page).stem + '.html')
    nav = ''.join(f'<a href="{names[p]}" data-page="{names[p]}">{html.escape(nbs[p][1].get("title", Path(p).stem))}</a>' for p in pages)
    for page, (nb, fm) in nbs.items():
        try:
            nb.cells = [c for c in nb.cells if c.cell_type != 'raw']
            body, _ = exporter.from_notebook_node(nb)
        except Exception as e:
            failed.append(f'{page}: {type(e).__name__}: {e}'); continue
        head = f'<h1 class="title">{html.escape(fm.get("title", Path(page).stem))}</h1>'
        if fm.get('description'): head += f'<p class="fc-description">{html.escape(fm["description"])}</p>'
        here = nav.replace(f'data-page="{names[page]}"', f'data-page="{names[page]}" class="fc-here"')
        site_title = '<div class="fc-site-title">fc_chatglm</div>'
        body = re.sub(r'<body([^>]*)>', lambda m: f'<body{m[1]}><div class="fc-site"><nav class="fc-nav">{site_title}{here}</nav>'
                      f'<main class="fc-page">{head}', body, count=1)
        body = body.replace('</body>', '</main></div></body>').replace('</head>', STYLE + '</head>', 1)
        body = re.sub(r'<title>[^<]*</title>', f'<title>{html.escape(fm.get("title", "fc_chatglm"))} – fc_chatglm</title>', body, count=1)
        (out/names[page]).write_text(rewrite_links(body, names, site_url), encoding='utf-8')
    return failed


def pandoc_id(text: str) -> str:
    "The id Pandoc (so Quarto) gives a heading: lower case, spaces as hyphens, only letters, digits, _ - and ."
    text = re.sub(r'[^\w\s.-]', '', html.unescape(text).lower()).strip()
    return re.sub(r'^[^a-z]+', '', re.sub(r'\s+', '-', text))


def rewrite_links(page: str, names: dict[str, str], site_url: str = '') -> str:
    """Links to notebooks become links to their pages (as Quarto does); `../` out of nbs/ leads to the repository
    folders copied into the site; links nbdev made to the published site (`site_url`) become relative, so the
    site reads the same before it is published; each heading also answers to the id Quarto gives it, which
    nbdev's links use."""
    if site_url: page = page.replace(f'href="{site_url.rstrip("/")}/', 'href="')
    page = re.sub(r'(<h[1-6][^>]*\bid="([^"]+)"[^>]*>)',
                  lambda m: m[1] + (f'<span id="{pandoc_id(m[2].replace("-", " "))}"></span>'
                                    if pandoc_id(m[2].replace("-", " ")) not in (m[2], '') else ''), page)
    def fix(m):
        attr, url = m[1], m[2]
        if urlsplit(url).scheme or url.startswith('#'): return m[0]
        path, _, frag = url.partition('#')
        if path.endswith(('.ipynb', '.md')) and Path(path).name in names: path = names[Path(path).name]
        if path.startswith('../'): path = path[3:]
        return f'{attr}="{path}{"#" + frag if frag else ""}"'
    return re.sub(r'\b(href|src)="([^"]*)"', fix, page)


def method_anchors(site: Path):
    "Point links to a method's anchor (`page.html#cls.method`), which nbdev makes but only an own `show_doc` fills, at its class."
    ids = {p: set(re.findall(r'\bid="([^"]+)"', p.read_text(encoding='utf-8'))) for p in site.rglob('*.html')}
    for p in ids:
        def fix(m):
            path, frag = m[2], m[3]
            target = (p.parent/unquote(path)).resolve() if path else p
            if frag in ids.get(target, {frag}) or frag.rsplit('.', 1)[0] not in ids.get(target, set()): return m[0]
            return f'{m[1]}="{path}#{frag.rsplit(".", 1)[0]}"'
        text = p.read_text(encoding='utf-8')
        new = re.sub(r'\b(href)="([^"#:]*)#([\w-]+\.[\w.]+)"', fix, text)
        if new != text: p.write_text(new, encoding='utf-8')


def check_links(site: Path) -> tuple[int, list[str]]:
    "How many relative links and images the site's pages hold, and those that lead nowhere: a missing file or a missing anchor."
    ids, broken, checked = {}, [], 0
    pages = sorted(site.rglob('*.html'))
    for p in pages: ids[p] = set(re.findall(r'\bid="([^"]+)"', p.read_text(encoding='utf-8')))
    for p in pages:
        text = p.read_text(encoding='utf-8')
        text = re.sub(r'<(script|style)\b.*?</\1>', '', text, flags=re.S)  # code, not links
        for attr, url in re.findall(r'<(?:a|img)\b[^>]*?\b(href|src)="([^"]*)"', text):
            parts = urlsplit(html.unescape(url))
            if parts.scheme or url.startswith('//') or not (parts.path or parts.fragment): continue
            checked += 1
            target = (p.parent/unquote(parts.path)).resolve() if parts.path else p
            if target.is_dir(): target = target/'index.html'
            if not target.exists(): broken.append(f'{p.relative_to(site)}: {url} (no such file)')
            elif parts.fragment and target.suffix == '.html' and unquote(parts.fragment) not in ids.get(target, set()):
                broken.append(f'{p.relative_to(site)}: {url} (no such anchor)')
    return checked, broken


def home_headings(shot: Path, site: Path) -> list[str]:
    "Open the home page in headless Chromium, save a screenshot; return what is missing of index.ipynb's headings."
    import json
    sys.path.insert(0, str(ROOT/'tests'))
    from jupyter_page import chromium
    nb = json.loads((ROOT/'nbs'/'index.ipynb').read_text(encoding='utf-8'))
    wanted = [l[3:].strip() for c in nb['cells'] if c['cell_type'] == 'markdown'
              for l in ''.join(c['source']).splitlines() if l.startswith('## ')]
    with chromium(1200, 900) as page:
        page.goto((site/'index.html').as_uri())
        shown = [h.strip().rstrip('¶').strip() for h in page.locator('h2').all_inner_texts()]
        title = page.locator('h1').first.inner_text()
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=shot)
    missing = [h for h in wanted if not any(h.replace('`', '') == s.replace('`', '') for s in shown)]
    return missing + ([] if title.strip() else ['(the page has no title)'])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--shot', type=Path, help='save a screenshot of the home page here, and check its headings')
    args = ap.parse_args()
    t0 = time.monotonic()
    from nbdev.config import get_config
    out = get_config().doc_path
    cache, pages = process()
    print(f'processed {len(pages)} notebooks and pages in {time.monotonic() - t0:.0f} s')
    if shutil.which('quarto'):
        subprocess.run(['quarto', 'render', str(cache), '--no-cache'], check=True)
        shutil.rmtree(out, ignore_errors=True)
        shutil.move(str(cache/out.name), str(out))
        failed = []
    else:
        print('Quarto is not installed: rendering the processed notebooks with nbconvert')
        shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
        failed = render_with_nbconvert(cache, pages, out)
        method_anchors(out)
    for folder in SITE_FILES:
        if (ROOT/folder).exists(): shutil.copytree(ROOT/folder, out/folder, dirs_exist_ok=True)
    checked, broken = check_links(out)
    problems = [f'did not render: {f}' for f in failed] + [f'broken link: {b}' for b in broken]
    if args.shot:
        problems += [f'home page: heading not shown: {h}' for h in home_headings(args.shot, out)]
    n = len(list(out.rglob('*.html')))
    print(f'{n} pages in {out}, {checked} links and images checked ({len(broken)} broken), in {time.monotonic() - t0:.0f} s')
    for p in problems: print(p)
    sys.exit(1 if problems else 0)


if __name__ == '__main__':
    main()
