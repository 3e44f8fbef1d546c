"""How long the chat widget takes to redraw in a real browser, with 1 and with 50 turns on screen.

    python benchmarks/bench_widget.py          # needs Debian's chromium (apt-get install chromium); about 40 s

JupyterLab runs on loopback and headless Chromium opens a notebook holding a chat whose engine streams a
fixed Markdown reply (code, a table, a list: about 700 characters in 4-character pieces, 20 ms apart). The
conversation is filled with rounds of the same reply, then one more message is sent from the page. The
widget's view records how long each of its redraws takes in the browser (`data-draw-ms`: setting the HTML,
laying out, following the newest text); the benchmark collects them all. A redraw while the reply streams
replaces the growing reply only; the redraw when it ends draws every finished turn again.
"""
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]/'tests'))
from jupyter_page import SCRIPTED, chromium, jupyter, open_notebook, run_cell, why_no_browser  # noqa: E402

SETUP = SCRIPTED + '''
from fc_chatglm.widget import ChatWidget
def chat_with(rounds):
    w = ChatWidget(Scripted(0.02, 0.02))
    for i in range(rounds): w.transcript.ask(f'Question {i}?'); w.transcript.answer(f'Question {i}?', REPLY)
    w._draw()
    return w'''

COLLECT = '''b => { window.fcDraws = []; new MutationObserver(() => window.fcDraws.push(+b.dataset.drawMs))
                   .observe(b, {attributes: true, attributeFilter: ['data-draws']}); }'''


def measure(page, cell) -> tuple[list[float], float, float]:
    "Send one message in the chat of `cell`; the streaming redraws' times, the last redraw's, and the reply's wall time (ms)."
    chat, box = cell.locator('.fc-chat'), cell.locator('.fc-box')
    chat.wait_for(timeout=60_000)
    chat.evaluate(COLLECT)
    box.click()
    page.keyboard.type('One more question?')
    t0 = time.perf_counter()
    page.keyboard.press('Enter')
    page.wait_for_function("b => /tokens\\/s/.test(b.innerText)", arg=cell.locator('.widget-html-content').element_handle(),
                           timeout=120_000)
    wall = (time.perf_counter() - t0) * 1000
    time.sleep(0.5)
    draws = page.evaluate('window.fcDraws')
    return draws[1:-1], draws[-1], wall  # the first draw shows the question, the last the finished turns


def main():
    if why := why_no_browser(): sys.exit(f'bench_widget: {why}')
    cells = [SETUP, 'w1 = chat_with(0)\nw1', 'w50 = chat_with(49)\nw50']
    with jupyter({'bench.ipynb': cells}) as server, chromium(1100, 1000) as page:
        open_notebook(page, server, 'bench.ipynb')
        run_cell(page, 0)
        rows = []
        for index, turns in ((1, 1), (2, 50)):
            cell = run_cell(page, index)
            streaming, last, wall = measure(page, cell)
            shown = cell.locator('.fc-turn').count()
            rows.append((turns, shown, len(streaming), statistics.median(streaming), max(streaming), last, wall))
    print('Redraws of the chat widget in headless Chromium (JupyterLab), one streamed reply of about 180 pieces:')
    print(f'{"turns after the reply":>22} {"turns on screen":>16} {"streaming redraws":>18} {"median ms":>10} {"max ms":>8} '
          f'{"final redraw ms":>16} {"reply wall s":>13}')
    for turns, shown, n, med, mx, last, wall in rows:
        print(f'{turns:>22} {shown:>16} {n:>18} {med:>10.2f} {mx:>8.2f} {last:>16.2f} {wall / 1000:>13.2f}')


if __name__ == '__main__':
    main()
