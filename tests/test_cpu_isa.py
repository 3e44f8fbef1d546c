"""The CPU benchmark runs as a smaller CPU (`--isa`): llama.cpp's build options per instruction set, the
environment the connector's processes get, and the per-layer / fixed split of its report."""
import contextlib, io, json, os, platform, subprocess, sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1]/'benchmarks'
sys.path.insert(0, str(BENCH))
import bench_cpu_vs_llamacpp as bench
import llamacpp


def test_llamacpp_builds_per_instruction_set():
    on = lambda isa: {o.split('=')[0][2:] for o in llamacpp.ISA[isa] if o.endswith('=ON')}
    off = lambda isa: {o.split('=')[0][2:] for o in llamacpp.ISA[isa] if o.endswith('=OFF')}
    assert {'GGML_AVX2', 'GGML_FMA', 'GGML_F16C'} <= on('avx2')
    assert {'GGML_AVX512', 'GGML_AVX512_VNNI', 'GGML_AVX512_BF16', 'GGML_AMX_TILE', 'GGML_AMX_INT8'} <= off('avx2')
    assert {'GGML_AVX512', 'GGML_AVX512_VNNI', 'GGML_AVX512_BF16'} <= on('avx512') and {'GGML_AMX_INT8', 'GGML_AMX_TILE'} <= off('avx512')
    dirs = {isa: llamacpp.build_dir(isa=isa) for isa in llamacpp.ISA}
    assert len(set(dirs.values())) == 3 and dirs['native'].name == 'build'  # each build its own folder; native where it was
    with pytest.raises(ValueError, match='unknown instruction set'): llamacpp.build_dir(isa='avx9')


def test_an_isa_the_cpu_lacks_is_refused(monkeypatch):
    monkeypatch.setattr(bench, 'cpu_info', lambda: ('Old CPU', {'sse4_2', 'avx'}))
    with pytest.raises(SystemExit, match='needs avx2, fma, f16c'): bench.use_isa('avx2')


@pytest.mark.skipif(platform.machine().lower() not in ('x86_64', 'amd64') or 'avx2' not in (bench.cpu_info()[1] or ()),
                    reason='emulating AVX2 needs an x86 CPU with AVX2')
def test_the_avx2_environment_makes_torch_an_avx2_machine():
    code = ('import json, torch; from fc_chatglm.quantize import native_half\n'
            'print(json.dumps([torch.backends.cpu.get_cpu_capability(), native_half(torch.bfloat16)]))')
    env = {**os.environ, **bench.ISA_ENV['avx2'], 'PYTHONPATH': str(BENCH.parent)}
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == ['AVX2', False]


def test_per_layer_and_fixed_costs_are_split_from_two_layer_counts():
    gen = lambda fixed, per, n: {'gen_tok_s': 1e3 / (fixed + per * n), 'prompt_tok_s': 1e3 / (fixed / 10 + per / 10 * n)}
    res = {'connector': {(f'{n} layers', 'int8'): [gen(40.0, 10.0, n)] for n in (2, 4)},
           'llama': {(f'{n} layers', 'Q8_0'): [gen(20.0, 5.0, n)] for n in (2, 4)}}
    old = bench.PRECISIONS[:]
    bench.PRECISIONS[:] = [('int8', 'Q8_0')]
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out: bench.split_table(res, [(2, '2 layers'), (4, '4 layers')])
    finally: bench.PRECISIONS[:] = old
    row = next(l for l in out.getvalue().splitlines() if l.startswith('| int8 / Q8_0'))
    assert row == '| int8 / Q8_0 | 10.00 / 5.00 (0.50) | 40.0 / 20.0 (0.50) | 1.00 / 0.50 (0.50) | 4.0 / 2.0 (0.50) |', row
