"""Build the documentation site from the notebooks into `_docs/`, and check every link in it.

    python tools/docs.py                      # build _docs/, check its links; exit 1 on a failure
    python tools/docs.py --shot PNG           # also open the home page in headless Chromium, check its
                                              # headings against index.ipynb's, and save a screenshot
    python tools/docs.py --page schemas:PNG   # also save a screenshot of a page, or of one from an anchor
                                              # (engine#prompt-formats:PNG); repeat for more

The notebooks are processed by nbdev exactly as `nbdev_docs` does (hidden cells dropped, the API
documentation of every exported name generated, front matter, the sidebar from `nbs/`), then rendered by
Quarto when `quarto` is on the PATH, as `nbdev_docs` does. Quarto cannot be installed from the package
registries this project may use (PyPI's `quarto-cli` downloads its binary from GitHub while it installs,
and `nbdev_docs` itself downloads Quarto when it is missing), so where it is missing each processed
notebook is rendered by nbconvert (installed with `jupyter`) into a page with the same name Quarto gives
it, a sidebar in the sidebar's order, and links between notebooks rewritten as Quarto rewrites them.
That renderer first does to each notebook what Quarto would (`quarto_cells`): it obeys the cell
options (`#| echo: false` shows only the output, `#| output: asis` renders it as Markdown, `include`,
`output: false`, `warning: false`, `code-fold`, `fig-cap`) and takes their lines out of the code shown,
renders `show_doc`'s output as documentation, and turns Quarto's Markdown extensions (`{target=...}`
after a link, `[text]{.class}`, `::: {.callout-note}`, `{#id}` after a heading) into HTML. Outputs saved
in the notebooks are shown as they are.

In both renderers `show_doc` writes a class as a class (`class Role(str, Enum):`) with its members (an
Enum's values, a pydantic model's or dataclass's fields, a Protocol's attributes and methods), its
constructor, or else what its body declares, where nbdev writes every symbol as a function
(`def Role(*args, **kwds):`). Every page built is checked for what should not be left on it (`leftovers`).

One difference from `nbdev_docs`: to make the API documentation, nbdev runs every cell that holds an
`import` (it takes such a cell for setup code). These notebooks import inside test cells and functions,
and such cells need the cells before them, so the docs run only exported cells, `show_doc` cells and
cells that are imports alone.
"""
import argparse
import ast
import html
import inspect
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
.fc-page h1.title, .fc-description {font-family: system-ui, -apple-system, "Segoe UI", sans-serif; padding: 0 .5rem}
.fc-description {font-size: 1.1rem; opacity: .8}
.jp-RenderedMarkdown pre {background: #f6f8fa; padding: .5rem .75rem; margin: .5rem 0 1rem; overflow-x: auto}
.celltag_fc-doc {margin-top: 1.5rem}
.celltag_fc-doc > hr:first-child {margin: 0 0 .5rem; border: 0; border-top: 1px solid #ddd}
.celltag_fc-doc h3, .celltag_fc-doc h4 {margin-top: .3rem; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace}
.celltag_fc-doc pre {background: #f6f8fa; border-left: 3px solid #2780e3; padding: .5rem .75rem; overflow-x: auto}
.fc-fold > summary {cursor: pointer; color: #555; font: 13px system-ui, sans-serif; margin: .25rem 0}
.fc-caption {font-style: italic; opacity: .8; margin-top: .25rem}
.fc-callout {border-left: 4px solid #2780e3; background: #f3f8fd; padding: .25rem 1rem; margin: 1rem 0}
.jp-OutputArea-output pre {border-left: 2px solid lightsalmon; padding-left: .6rem}
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


MODULE_PATHS = r'\b(?:fc_chatglm\.\w+|typing|collections\.abc|builtins)\.'  # left out of a signature: the page says where a name lives


def fmt_annotation(anno) -> str:
    "A type annotation as one writes it: `int | None`, `list[Message]`, `Literal['a', 'b']`; `Annotated`'s constraints left out."
    import types
    import typing
    if anno is type(None) or anno is None: return 'None'
    if isinstance(anno, str): return re.sub(MODULE_PATHS, '', anno)
    if isinstance(anno, typing.ForwardRef): return anno.__forward_arg__
    if isinstance(anno, list): return '[' + ', '.join(map(fmt_annotation, anno)) + ']'
    origin, args = typing.get_origin(anno), typing.get_args(anno)
    if origin is typing.Annotated: return fmt_annotation(args[0])
    if origin in (typing.Union, types.UnionType): return ' | '.join(map(fmt_annotation, args))
    if origin is typing.Literal: return f'Literal[{", ".join(map(repr, args))}]'
    if origin is not None and args:
        name = getattr(anno, '_name', None) or getattr(origin, '__name__', str(origin))
        return f'{name}[{", ".join(map(fmt_annotation, args))}]'
    if isinstance(anno, type): return anno.__qualname__ if anno.__module__ != 'builtins' else anno.__name__
    return re.sub(MODULE_PATHS, '', inspect.formatannotation(anno))


def constraints(anno, metadata=()) -> list[str]:
    "A pydantic field's constraints (`ge=0`, `max_length=4`), from its metadata and any `Annotated` in its type."
    import typing
    found = [m[1] for m in (re.fullmatch(r'\w+\(([^<]+)\)', repr(x)) for x in metadata or ()) if m and 'func=' not in m[1]]  # Ge(ge=0): ge=0
    if typing.get_origin(anno) is typing.Annotated:
        found += constraints(typing.get_args(anno)[0], [m for m in typing.get_args(anno)[1:] if not hasattr(m, 'annotation')]
                             + [x for m in typing.get_args(anno)[1:] for x in getattr(m, 'metadata', [])])
    else: found += [c for a in typing.get_args(anno) for c in constraints(a)]
    return found


def fmt_signature(fn, skip_self=False) -> str:
    "A callable's parameters and return type as one writes them: `(self, request: ChatRequest, cancel: Event) -> Outcome`."
    try: sig = inspect.signature(fn)
    except (TypeError, ValueError): return '(...)'
    params = []
    for p in sig.parameters.values():
        text = ('*' if p.kind is p.VAR_POSITIONAL else '**' if p.kind is p.VAR_KEYWORD else '') + p.name
        if p.annotation is not p.empty: text += f': {fmt_annotation(p.annotation)}'
        if p.default is not p.empty: text += (' = ' if p.annotation is not p.empty else '=') + repr(p.default)
        params.append(text)
    ret = f' -> {fmt_annotation(sig.return_annotation)}' if sig.return_annotation is not sig.empty else ''
    return f'({", ".join(params)}){ret}'


def factory_text(factory) -> str:
    "A default factory as the value it makes: `[]`, `{}`, `Settings()`."
    known = {list: '[]', dict: '{}', set: 'set()'}
    if factory in known: return known[factory]
    name = getattr(factory, '__name__', '<lambda>')
    return f'{name}()' if name != '<lambda>' else '...'


def class_members(cls) -> list[str] | None:
    "The lines that say what a class holds, where it declares them: an Enum's values, a pydantic model's, dataclass's or NamedTuple's fields, a Protocol's attributes and methods."
    import dataclasses
    import enum

    def field(name, anno, default=inspect.Parameter.empty, note=''):
        line = name + (f': {fmt_annotation(anno)}' if anno is not inspect.Parameter.empty else '')
        if default is not inspect.Parameter.empty: line += f' = {default}'
        return line + (f'  # {note}' if note else '')
    if issubclass(cls, enum.Enum): return [f'{m.name} = {m.value!r}' for m in cls]
    if isinstance(getattr(cls, 'model_fields', None), dict):  # pydantic
        out = []
        for name, f in cls.model_fields.items():
            default = (inspect.Parameter.empty if f.is_required() else
                       factory_text(f.default_factory) if f.default_factory else repr(f.default))
            notes = [f'"{f.alias}"'] if f.alias and f.alias != name else []
            notes += constraints(f.annotation, f.metadata) + ([f.description] if f.description else [])
            out.append(field(name, f.annotation, default, ', '.join(notes)))
        return out
    if dataclasses.is_dataclass(cls):
        return [field(f.name, f.type, repr(f.default) if f.default is not dataclasses.MISSING else
                      factory_text(f.default_factory)
                      if f.default_factory is not dataclasses.MISSING else inspect.Parameter.empty)
                for f in dataclasses.fields(cls)]
    if issubclass(cls, tuple) and hasattr(cls, '_fields'):  # NamedTuple
        annos, defaults = getattr(cls, '__annotations__', {}), getattr(cls, '_field_defaults', {})
        return [field(n, annos.get(n, inspect.Parameter.empty), repr(defaults[n]) if n in defaults else inspect.Parameter.empty)
                for n in cls._fields]
    if getattr(cls, '_is_protocol', False): return declared_members(cls)
    return None


def declared_members(cls) -> list[str]:
    "What a class declares in its own body: its annotated attributes (with their defaults), properties and public methods."
    out = []
    for name, anno in cls.__dict__.get('__annotations__', {}).items():
        default = cls.__dict__.get(name, inspect.Parameter.empty)
        out.append(name + f': {fmt_annotation(anno)}' + (f' = {default!r}' if default is not inspect.Parameter.empty else ''))
    for name, member in cls.__dict__.items():
        if name.startswith('_') and name != '__call__': continue
        if isinstance(member, property):
            ret = inspect.signature(member.fget).return_annotation if member.fget else inspect.Parameter.empty
            out.append(f'@property\ndef {name}(self)' + (f' -> {fmt_annotation(ret)}' if ret is not inspect.Parameter.empty else '') + ': ...')
        elif inspect.isfunction(member) or isinstance(member, (staticmethod, classmethod)):
            fn = getattr(member, '__func__', member)
            deco = f'@{type(member).__name__}\n' if isinstance(member, (staticmethod, classmethod)) else ''
            head = f'{deco}{"async " if inspect.iscoroutinefunction(fn) else ""}def {name}'
            sig = fmt_signature(fn)
            if len(head) + len(sig) > 100:  # one parameter a line
                params, _, ret = sig[1:].rpartition(')')
                parts = [p.strip() for p in re.split(r',\s*(?![^\[\(]*[\]\)])', params) if p.strip()]
                sig = '(\n' + ''.join(f'    {p},\n' for p in parts) + ')' + ret
            out.append(f'{head}{sig}: ...')
    return out


VAGUE_INIT = ({'*args', '**kwds'}, {'*args', '**kwargs'}, {'**data:Any'}, {'**kwargs'}, set())


def class_signature(cls, name: str, params: list[tuple[str, str]], maxline: int = 110) -> str:
    "A class as Python writes one: `class Name(Base, ...):`, then its members or its constructor, or `...`."
    from fastcore.docments import _fmt_sig
    import dataclasses
    bases = [b.__name__ for b in cls.__bases__ if b is not object and b.__name__ not in ('Generic', 'Protocol')]
    if getattr(cls, '_is_protocol', False): bases.append('Protocol')
    if issubclass(cls, tuple) and hasattr(cls, '_fields') and bases == ['tuple']: bases = ['NamedTuple']
    head = f'class {name}' + (f'({", ".join(bases)})' if bases else '') + ':'
    if dataclasses.is_dataclass(cls):
        frozen = getattr(cls, '__dataclass_params__', None) and cls.__dataclass_params__.frozen
        head = ('@dataclass(frozen=True)\n' if frozen else '@dataclass\n') + head
    body = class_members(cls)
    if body is None and {f for f, _ in params} not in VAGUE_INIT:
        body = [_fmt_sig('__init__', [('self', '')] + list(params), '):', maxline)]
    elif body is None:  # no constructor of its own to show: what its body declares (an interface's members)
        body = declared_members(cls)
    if not body: return head + ' ...'
    return head + ''.join('\n' + '\n'.join('    ' + l for l in b.splitlines()) for b in body)


def site_renderer(base):
    "nbdev's `show_doc` renderer (`base`), with a class written as a class (`class_signature`) instead of a function."
    class SiteRenderer(base):
        def _repr_markdown_(self):
            md = super()._repr_markdown_()
            if not inspect.isclass(self.sym):  # nbdev's function signature, without module paths
                return re.sub(r'```python\n.*?\n```', lambda m: re.sub(MODULE_PATHS, '', m[0]), md, count=1, flags=re.S)
            params = [(re.sub(MODULE_PATHS, '', f), d) for f, d in self.dm.params]
            sig = class_signature(self.sym, self.nm.rsplit('.', 1)[-1], params)
            return re.sub(r'```python\n.*?\n```', lambda m: f'```python\n{sig}\n```', md, count=1, flags=re.S)
    SiteRenderer.__name__ = SiteRenderer.__qualname__ = 'BasicMarkdownRenderer'
    return SiteRenderer


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
    import nbdev.showdoc
    nbdev_renderer = getattr(nbdev.showdoc, 'NbdevMarkdownRenderer', nbdev.showdoc.BasicMarkdownRenderer)
    nbdev.showdoc.NbdevMarkdownRenderer = nbdev_renderer
    nbdev.showdoc.BasicMarkdownRenderer = site_renderer(nbdev_renderer)  # what show_doc uses when no renderer is configured
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


TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{% block input_group -%}
{%- if cell.metadata.get('fc_fold') -%}
<details class="fc-fold"{{ ' open' if cell.metadata.fc_fold == 'show' else '' }}><summary>{{ cell.metadata.get('fc_summary', 'Code') | e }}</summary>
{{ super() }}
</details>
{%- else -%}
{{ super() }}
{%- endif -%}
{%- endblock input_group %}
"""


def quarto_attrs(attrs: str) -> str:
    "Pandoc's attributes (`{#id .class key=\"value\"}`) as HTML ones."
    out, classes = [], []
    for cls, ident, key, value in re.findall(r'\.([\w-]+)|#([\w-]+)|([\w-]+)=("[^"]*"|\'[^\']*\'|[^\s}]+)', attrs):
        if cls: classes.append(cls)
        elif ident: out.append(f'id="{html.escape(ident)}"')
        elif key: out.append(f'{key}="{html.escape(value.strip(chr(34) + chr(39)))}"')
    return ' '.join(([f'class="{" ".join(classes)}"'] if classes else []) + out)


def quarto_markdown(text: str) -> str:
    """Markdown with Quarto's extensions made plain Markdown and HTML, as Quarto renders them: a link's or a
    span's attributes (`[source](url){target="_blank"}`, `[text]{.class}`), a heading's (`## Title {#id}`), and
    fenced divs (`::: {.callout-note}`) as a box. Code blocks and code spans are left as they are."""
    def outside_code(part: str) -> str:
        spans = re.split(r'(`+[^`]*?`+)', part)
        for i in range(0, len(spans), 2):
            t = spans[i]
            t = re.sub(r'\[([^\]]*)\]\(([^)\s]*)\)\{([^}]*)\}', lambda m: f'<a href="{m[2]}" {quarto_attrs(m[3])}>{m[1]}</a>', t)
            t = re.sub(r'(?<!\])\[([^\]]*)\]\{([^}]*)\}', lambda m: f'<span {quarto_attrs(m[2])}>{m[1]}</span>', t)
            t = re.sub(r'^(#{1,6} .*?)\s*\{[#.][^}]*\}\s*$', r'\1', t, flags=re.M)
            spans[i] = t
        return ''.join(spans)
    blocks = re.split(r'(^(?:```|~~~)[^\n]*\n.*?^(?:```|~~~)[ \t]*$)', text, flags=re.M | re.S)
    text = ''.join(b if i % 2 else outside_code(b) for i, b in enumerate(blocks))
    def callout(m):
        kind = re.search(r'callout-(\w+)', m[1])
        title = (kind[1].capitalize() if kind else '')
        return f'<div class="fc-callout">\n\n' + (f'**{title}**\n\n' if title else '') + m[2].strip() + '\n\n</div>'
    return re.sub(r'^:{3,}\s*\{?([^}\n]*)\}?\s*\n(.*?)^:{3,}\s*$', callout, text, flags=re.M | re.S)


def cell_options(source: str) -> tuple[dict[str, str], str]:
    "A code cell's Quarto options (its leading `#| key: value` lines), and its code without them."
    opts, lines = {}, source.splitlines()
    while lines and lines[0].startswith('#|'):
        key, _, value = lines.pop(0)[2:].partition(':')
        opts[key.strip()] = value.strip().strip('"\'')
    return opts, '\n'.join(lines)


def as_markdown(output) -> str:
    "An output as the Markdown that `#| output: asis` puts on the page: its Markdown, its HTML, or its text."
    if output.get('output_type') == 'stream': return output.get('text', '')
    data = output.get('data', {})
    for mime in ('text/markdown', 'text/html', 'text/plain'):
        if mime in data: return data[mime] if isinstance(data[mime], str) else ''.join(data[mime])
    return ''


def quarto_cells(nb):
    """What Quarto does with a processed notebook's cells, for nbconvert: each code cell's options obeyed and taken
    out of the code shown; `output: asis` as Markdown (`show_doc`'s documentation a Markdown cell tagged `fc-doc`);
    Quarto's Markdown extensions made plain (`quarto_markdown`). Saved outputs stay as they are."""
    import nbformat
    cells = []
    for cell in nb.cells:
        if cell.cell_type == 'markdown': cell.source = quarto_markdown(cell.source)
        if cell.cell_type != 'code':
            cells.append(cell); continue
        opts, cell.source = cell_options(cell.source)
        outputs = cell.get('outputs', [])
        if opts.get('include') == 'false': continue
        if opts.get('output') == 'false': outputs = []
        if opts.get('warning') == 'false': outputs = [o for o in outputs if not (o.get('output_type') == 'stream' and o.get('name') == 'stderr')]
        echo = opts.get('echo', 'true') != 'false' and cell.source.strip()
        if opts.get('output') == 'asis':
            if echo:
                cell.outputs = []; cells.append(cell)
            md = nbformat.v4.new_markdown_cell(quarto_markdown('\n\n'.join(as_markdown(o) for o in outputs).strip()))
            if re.match(r'\s*show_doc\(', cell.source): md.metadata['tags'] = ['fc-doc']
            if md.source: cells.append(md)
            continue
        for o in outputs:
            if 'text/markdown' in o.get('data', {}): o.data['text/markdown'] = quarto_markdown(as_markdown(o))
        cell.outputs = outputs
        if not echo:
            if not outputs: continue
            cell.metadata['transient'] = {'remove_source': True}
        elif opts.get('code-fold', 'false') != 'false':
            cell.metadata['fc_fold'] = opts['code-fold']
            cell.metadata['fc_summary'] = opts.get('code-summary', 'Code')
        cells.append(cell)
        if opts.get('fig-cap'):
            cells.append(nbformat.v4.new_markdown_cell(f'<p class="fc-caption">{html.escape(opts["fig-cap"])}</p>'))
    nb.cells = cells
    return nb


def title_html(text: str) -> str:
    "A page title as HTML: escaped, with its `code` spans as code."
    return re.sub(r'`([^`]+)`', r'<code>\1</code>', html.escape(text))


def render_with_nbconvert(cache: Path, pages: list[str], out: Path) -> list[str]:
    "Each processed notebook as a page of `out`; returns the notebooks that failed (with why)."
    import nbformat
    from nbconvert import HTMLExporter
    from nbdev.config import get_config
    cfg = get_config()
    site_url = cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/')
    from jinja2 import DictLoader
    exporter = HTMLExporter(template_name='lab', exclude_input_prompt=True, exclude_output_prompt=True,
                            extra_loaders=[DictLoader({'fc_site.html.j2': TEMPLATE})], template_file='fc_site.html.j2')
    nbs, names, failed = {}, {}, []
    for page in pages:
        nb = read_page(cache/page)
        fm = front_matter(nb)
        nbs[page], names[page] = (nb, fm), fm.get('output-file', Path(page).stem + '.html')
    nav = ''.join(f'<a href="{names[p]}" data-page="{names[p]}">{title_html(nbs[p][1].get("title", Path(p).stem))}</a>' for p in pages)
    for page, (nb, fm) in nbs.items():
        try:
            nb.cells = [c for c in nb.cells if c.cell_type != 'raw']
            quarto_cells(nb)
            body, _ = exporter.from_notebook_node(nb)
        except Exception as e:
            failed.append(f'{page}: {type(e).__name__}: {e}'); continue
        head = f'<h1 class="title">{title_html(fm.get("title", Path(page).stem))}</h1>'
        if fm.get('description'): head += f'<p class="fc-description">{html.escape(fm["description"])}</p>'
        here = nav.replace(f'data-page="{names[page]}"', f'data-page="{names[page]}" class="fc-here"')
        site_title = '<div class="fc-site-title">fc_chatglm</div>'
        body = re.sub(r'<body([^>]*)>', lambda m: f'<body{m[1]}><div class="fc-site"><nav class="fc-nav">{site_title}{here}</nav>'
                      f'<main class="fc-page">{head}', body, count=1)
        body = body.replace('</body>', '</main></div></body>').replace('</head>', STYLE + '</head>', 1)
        body = re.sub(r'<title>[^<]*</title>', f'<title>{html.escape(fm.get("title", "fc_chatglm").replace("`", ""))} – fc_chatglm</title>', body, count=1)
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


def leftovers(site: Path) -> list[str]:
    """What the renderer should have processed and left on a page: a cell option (`#|`) or Quarto's attributes
    (`{target=...}`, `{.class}`, `:::`) in the text outside code, or a class documented as `(*args, **kwds)`."""
    found = []
    for p in sorted(site.rglob('*.html')):
        page = p.read_text(encoding='utf-8')
        shown = re.sub(r'<(script|style)\b.*?</\1>', '', page, flags=re.S)
        options = len(re.findall(r'(?m)^\s*#\|', html.unescape(re.sub(r'<[^>]+>', '', shown))))  # code shown included
        if options: found.append(f'{p.relative_to(site)}: a cell option shown ({options})')
        text = html.unescape(re.sub(r'<[^>]+>', '', re.sub(r'<(pre|code)\b.*?</\1>', '', shown, flags=re.S)))
        for what, pattern in (('a link attribute', r'\]\([^)]*\)\{|\{target='), ('a Quarto class', r'\{\.[\w-]+\}'),
                              ('a fenced div', r'(?m)^:::')):
            if n := len(re.findall(pattern, text)): found.append(f'{p.relative_to(site)}: {what} shown as text ({n})')
        docs = ''.join(re.findall(r'celltag_fc-doc".*?</div>', page, flags=re.S))
        if n := len(re.findall(r'\*args.{0,80}\*\*kwds', html.unescape(re.sub(r'<[^>]+>', '', docs)), flags=re.S)):
            found.append(f'{p.relative_to(site)}: a signature written as (*args, **kwds) ({n})')
    return found


def page_shots(shots: list[str], site: Path) -> list[str]:
    "Open each `PAGE[#ANCHOR]:PNG` (a page of the site, without .html) in headless Chromium and save a screen of it, from its top or from the anchor; return what failed."
    sys.path.insert(0, str(ROOT/'tests'))
    from jupyter_page import chromium
    failed = []
    with chromium(1200, 1300) as page:
        for shot in shots:
            where, _, png = shot.partition(':')
            name, _, anchor = where.partition('#')
            if not (site/f'{name}.html').exists():
                failed.append(f'{shot}: no page {name}.html'); continue
            page.goto((site/f'{name}.html').as_uri())
            if anchor and not page.evaluate('a => { const e = document.getElementById(a); if (e) e.scrollIntoView(); return !!e }', anchor):
                failed.append(f'{shot}: no anchor #{anchor}'); continue
            Path(png).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=png)
    return failed


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
    ap.add_argument('--page', action='append', default=[], metavar='PAGE[#ANCHOR]:PNG',
                    help='save a screenshot of a page, from its top or an anchor (engine#prompt-formats:docs/images/docs-engine.png); may be repeated')
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
    problems += leftovers(out)
    if args.shot:
        problems += [f'home page: heading not shown: {h}' for h in home_headings(args.shot, out)]
    if args.page:
        problems += [f'screenshot: {f}' for f in page_shots(args.page, out)]
    n = len(list(out.rglob('*.html')))
    print(f'{n} pages in {out}, {checked} links and images checked ({len(broken)} broken), in {time.monotonic() - t0:.0f} s')
    for p in problems: print(p)
    sys.exit(1 if problems else 0)


if __name__ == '__main__':
    main()
