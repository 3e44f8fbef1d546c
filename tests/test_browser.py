"""The chat widget in a real browser: JupyterLab and Notebook 7 on loopback, driven in headless Chromium.

Every check reads what the page shows (text, buttons, the box's content, the focus, the clipboard), not the
kernel's Python objects. Skipped, with the reason, where Chromium or a Python package is missing (an error
in CI, where `.ci/run` installs both). The pictures the README and 10_widget show are taken here; refresh them
with `FC_SCREENSHOTS=docs/images pytest tests/test_browser.py -k markdown`.
"""
import os
import re
import time
from pathlib import Path

import pytest

from jupyter_page import SCRIPTED, chromium, jupyter, open_notebook, run_cell, why_no_browser

MISSING = why_no_browser()
if MISSING and os.environ.get('CI') == 'true':  # .ci/run installs everything: there a skip would hide a broken setup
    raise RuntimeError(f'CI must run the browser test, but {MISSING}')
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f'no browser test: {MISSING}')
if MISSING is None: from playwright.sync_api import expect

SETUP = SCRIPTED + '''
from pathlib import Path
from fc_chatglm.load import load_engine
from fc_chatglm.widget import ChatWidget, chat

def slowly(opts, progress):  # a loader that takes its time, as a 6B model does: the progress bar must be seen
    for i in range(3): progress(i / 4, f'step {i + 1} of 4'); time.sleep(1)
    return load_engine(opts, progress)'''
DEMO = "w = chat(demo=True, demo_dir=Path('demo'), loader=slowly)\nw"
SCRIPTED = "s = ChatWidget(Scripted())\ns"
NB7 = "w = chat(demo=True, demo_dir=Path('demo'))\nw"
SHOTS = Path(os.environ['FC_SCREENSHOTS']) if os.environ.get('FC_SCREENSHOTS') else None
T = 60_000  # ms: the longest any one step may take
# The contrast ratio (WCAG 2) of an element's text against what is behind it: its own background and its
# ancestors', translucent ones laid over the first opaque one.
CONTRAST = '''el => {
  const rgba = s => { const c = s.match(/[\\d.]+/g).map(Number); if (c.length === 3) c.push(1); return c; };
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
                     return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c[3] > 0) layers.push(c);
    if (c[3] === 1) break;
  }
  let bg = [255, 255, 255];
  for (const c of layers.reverse()) bg = bg.map((v, i) => c[i] * c[3] + v * (1 - c[3]));
  const a = lum(rgba(getComputedStyle(el).color)) + 0.05, b = lum(bg) + 0.05;
  return Math.max(a, b) / Math.min(a, b);
}'''


@pytest.fixture(scope='module')
def server():
    with jupyter({'chat.ipynb': [SETUP, DEMO, SCRIPTED], 'nb7.ipynb': [SETUP, NB7]}) as s: yield s


@pytest.fixture
def page(server):
    with chromium() as p: yield p
    server.stop_kernels()


class Chat:
    "One widget's output on the page, read as a person reads it."
    def __init__(self, page, cell):
        self.page, self.cell = page, cell
        self.box, self.chat, self.status = cell.locator('.fc-box'), cell.locator('.fc-chat'), cell.locator('.widget-html-content')
        self.progress = cell.locator('.widget-hprogress')

    def button(self, name: str): return self.cell.locator('button', has_text=re.compile(f'^\\s*{name}\\s*$'))
    def users(self): return self.chat.locator('.fc-user')
    def replies(self): return self.chat.locator('.fc-assistant')
    def prompt(self) -> str: return self.cell.locator('.jp-InputPrompt').inner_text()

    def setting(self, index: int, value: str):
        "Type `value` into the readout of the `index`th slider (temperature, max new tokens, top-p), as a person edits it."
        readout = self.cell.locator('.widget-readout').nth(index)
        readout.click()
        self.page.keyboard.press('Control+A')
        self.page.keyboard.type(value)
        self.page.keyboard.press('Enter')
        return readout

    def draws(self) -> int: return int(self.chat.get_attribute('data-draws') or 0)

    def act(self, do):
        "Do `do()` (a click, a key), wait until the kernel has redrawn the conversation, then until the reply ends."
        n = self.draws()
        do()
        self.page.wait_for_function('([b, n]) => +b.dataset.draws > n', arg=[self.chat.element_handle(), n], timeout=T)
        self.done()

    def done(self):
        "Wait for the reply to end: Send enabled again, nothing being written."
        expect(self.button('Send')).to_be_enabled(timeout=T)
        expect(self.chat).not_to_contain_text('writing…', timeout=T)

    def focused(self) -> bool: return self.box.evaluate('b => document.activeElement === b')

    def shot(self, name: str):
        if SHOTS: SHOTS.mkdir(parents=True, exist_ok=True); self.cell.locator('.jp-OutputArea').screenshot(path=SHOTS/name)


def test_chat_in_jupyterlab(server, page):
    "Load behind the progress bar, send (button and Enter), stream, Stop, Retry, Edit, settings, Copy and Clear."
    t0 = time.monotonic()
    open_notebook(page, server, 'chat.ipynb')
    run_cell(page, 0)
    c = Chat(page, run_cell(page, 1))
    # drawn first, then loaded: the progress bar and the status follow the loader
    expect(c.status).to_contain_text('Loading the demo model: step', timeout=T)
    expect(c.progress).to_be_visible()
    expect(c.button('Send')).to_be_disabled()
    expect(c.status).to_contain_text('Ready: demo', timeout=T)
    expect(c.progress).to_be_hidden()
    prompt = c.prompt()

    # the settings: temperature 0, 12 new tokens; the next reply says it was cut at 12
    c.setting(0, '0')
    expect(c.setting(1, '12')).to_have_text('12')
    c.box.click()
    c.box.fill('Hello <b>there</b>')
    c.act(c.button('Send').click)
    expect(c.users().last).to_contain_text('Hello <b>there</b>', timeout=T)  # as typed, not as HTML
    expect(c.box).to_have_value('')
    page.wait_for_function('() => document.activeElement && document.activeElement.classList.contains("fc-box")', timeout=T)
    expect(c.status).to_contain_text('12 tokens in', timeout=T)
    expect(c.status).to_contain_text('cut at the max new tokens')

    # Enter sends; the cell is not run again
    c.box.click()
    page.keyboard.type('Second')
    c.act(lambda: page.keyboard.press('Enter'))
    expect(c.users()).to_have_count(2, timeout=T)
    expect(c.users().last).to_contain_text('Second')
    expect(c.box).to_have_value('')
    assert c.focused()
    first = c.replies().last.inner_text()

    # Retry at temperature 0: the same reply, in place
    c.act(c.button('Retry').click)
    expect(c.users()).to_have_count(2)
    expect(c.replies()).to_have_count(2)
    assert c.replies().last.inner_text() == first

    # the slider stops inside the model's window; a long reply grows on screen, and Stop stops it
    expect(c.setting(1, '99999')).to_have_text('2047')
    c.setting(1, '1500')  # (2047 leaves the message one token of the window: it would be refused)
    c.box.click()
    page.keyboard.type('Write forever.')
    page.keyboard.press('Enter')
    growing = c.chat.locator('.fc-assistant', has_text='writing…')
    expect(growing).to_be_visible(timeout=T)
    sizes = []
    for _ in range(40):
        if growing.count(): sizes.append(len(growing.inner_text()))
        if len(set(sizes)) >= 3: break
        time.sleep(0.25)
    assert len(set(sizes)) >= 3 and sizes == sorted(sizes), sizes  # it grows while it streams
    expect(c.button('Stop')).to_be_enabled()
    c.button('Stop').click()
    c.done()
    expect(c.status).to_contain_text('stopped (cancelled)')
    expect(c.replies().last).to_contain_text('(stopped)')
    stopped = int(re.search(r'(\d+) tokens in', c.status.inner_text())[1])
    assert stopped < 2047

    # Retry after a stop: a second try, within the new limit
    c.setting(1, '8')
    c.act(c.button('Retry').click)
    expect(c.status).to_contain_text('8 tokens in')
    expect(c.users()).to_have_count(3)
    expect(c.replies().last).not_to_contain_text('(stopped)')

    # Copy: the reply's own text on the clipboard
    c.replies().last.hover()
    c.replies().last.locator('.fc-copy').click()
    expect(c.replies().last.locator('.fc-copy')).to_have_text('Copied')
    assert page.evaluate('navigator.clipboard.readText()') == c.replies().last.get_attribute('data-text')

    # Edit: the last message back in the box, its round gone; Shift+Enter adds a line without running the cell
    c.button('Edit').click()
    expect(c.box).to_have_value('Write forever.', timeout=T)
    expect(c.users()).to_have_count(2)
    expect(c.status).to_contain_text('back in the box')
    c.box.click()
    page.keyboard.press('End')
    page.keyboard.press('Shift+Enter')
    page.keyboard.type('Or not.')
    expect(c.box).to_have_value('Write forever.\nOr not.')
    c.act(lambda: page.keyboard.press('Enter'))
    expect(c.users()).to_have_count(3, timeout=T)
    expect(c.users().last).to_contain_text('Write forever.\nOr not.')
    assert c.prompt() == prompt  # the cell never ran again: same conversation, same kernel state

    # Clear
    c.button('Clear').click()
    expect(c.chat).to_contain_text('No messages yet', timeout=T)
    expect(c.users()).to_have_count(0)
    print(f'\nJupyterLab chat test: {time.monotonic() - t0:.1f} s')


def test_markdown_scroll_and_screenshots(server, page):
    "A scripted Markdown reply: rendered (code, table), shot mid-stream and at the end; the view follows the newest text unless scrolled up."
    open_notebook(page, server, 'chat.ipynb')
    run_cell(page, 0)
    c = Chat(page, run_cell(page, 2))
    expect(c.status).to_contain_text('Ready: a scripted reply', timeout=T)
    c.box.click()
    page.keyboard.type('Write a Python function that counts the words in a text, with a table of timings.')
    page.keyboard.press('Enter')
    expect(c.chat.locator('.fc-assistant', has_text='writing…').locator('pre code')).to_contain_text('return counts', timeout=T)
    c.shot('chat-streaming.png')
    c.done()
    reply = c.replies().last
    expect(reply.locator('pre code.language-python')).to_contain_text('def count_words')
    expect(reply.locator('table td')).to_have_count(4)
    expect(reply.locator('strong')).to_have_text('linear')
    c.shot('chat-markdown.png')
    # readable in the light theme and in the dark one: WCAG's contrast of 4.5 at least, for text and code
    for theme in ('JupyterLab Light', 'JupyterLab Dark'):
        page.evaluate('theme => window.jupyterapp.commands.execute("apputils:change-theme", {theme})', theme)
        page.wait_for_function('light => document.body.dataset.jpThemeLight === light', arg=str(theme.endswith('Light')).lower(), timeout=T)
        time.sleep(0.5)  # the theme's style sheet is applied
        for part in ('p', 'pre code', 'td'):
            ratio = reply.locator(part).first.evaluate(CONTRAST)
            assert ratio >= 4.5, (theme, part, ratio)
            print(f'{theme}, {part}: contrast {ratio:.1f}')
    c.shot('chat-dark.png')
    page.evaluate('window.jupyterapp.commands.execute("apputils:change-theme", {theme: "JupyterLab Light"})')

    # three more rounds overflow the box: it follows the newest reply ...
    for i in range(3):
        c.box.click(); page.keyboard.type(f'Again ({i}).'); c.act(lambda: page.keyboard.press('Enter'))
    expect(c.users()).to_have_count(4)
    at_bottom = 'b => b.scrollHeight - b.scrollTop - b.clientHeight < 30'
    assert c.chat.evaluate('b => b.scrollHeight > b.clientHeight + 100'), 'the conversation should overflow its box'
    assert c.chat.evaluate(at_bottom)
    # ... unless the reader scrolled up: then it stays where they are
    c.chat.evaluate('b => { b.scrollTop = 0; b.dispatchEvent(new Event("scroll")); }')
    c.box.click(); page.keyboard.type('Once more.'); c.act(lambda: page.keyboard.press('Enter'))
    assert c.chat.evaluate('b => b.scrollTop') == 0
    c.chat.evaluate('b => { b.scrollTop = b.scrollHeight; b.dispatchEvent(new Event("scroll")); }')
    c.box.click(); page.keyboard.type('And again.'); c.act(lambda: page.keyboard.press('Enter'))
    assert c.chat.evaluate(at_bottom)


def test_chat_in_notebook7(server, page):
    "Notebook 7: it renders, Enter sends, Shift+Enter adds a line and does not run the cell again."
    open_notebook(page, server, 'nb7.ipynb', ui='notebook')
    run_cell(page, 0)
    c = Chat(page, run_cell(page, 1))
    expect(c.status).to_contain_text('Ready: demo', timeout=T)
    prompt = c.prompt()
    c.setting(0, '0')  # greedy: a sampled reply may end (EOS) before its 6 tokens
    expect(c.setting(1, '6')).to_have_text('6')
    c.box.click()
    page.keyboard.type('one')
    page.keyboard.press('Shift+Enter')
    page.keyboard.type('two')
    expect(c.box).to_have_value('one\ntwo')
    assert c.prompt() == prompt
    c.act(lambda: page.keyboard.press('Enter'))
    expect(c.users()).to_have_count(1, timeout=T)
    expect(c.users().last).to_contain_text('one\ntwo')
    expect(c.box).to_have_value('')
    expect(c.status).to_contain_text('6 tokens in')
    assert c.prompt() == prompt and c.focused()
