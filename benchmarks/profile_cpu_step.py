#!/usr/bin/env python
"""Where a CPU decoding step of the connector spends its time: the matrix-vector products, copies, attention, the rest, and Python.

For each dtype, loads a 6B-width ChatGLM2 checkpoint (random weights, written by
`bench_cpu_vs_llamacpp.py` in its cache folder, or here if missing) the way the connector does
(`load_engine`, device cpu), runs a 128-token prompt, then

- times `--steps` one-token steps (`Decoder.step`, what the engine's loop calls) without the profiler;
- records the same number of steps with torch.profiler and sums each operation's own time into
  groups: matrix products (the weights' matrix-vector products and attention's two small products),
  copies and dtype conversions, attention's softmax and masking, norms and other element-wise
  work; what the step's wall time has beyond the operations is the Python and dispatch around them;
- reads the weight bytes a step must stream (every linear layer's weight and the output layer) and
  prints the memory bandwidth the matrix products reach (bytes / their time);
- prints the top operations by own time, with their input shapes and dtypes.

Then profiles one 128-token prompt (the operations that take most of it) and, in half precision,
times the output layer on the last prompt position as the prompt hands it over and as a fresh row
(the first sends PyTorch down a batched path that copies the whole output weight: see the page
`nbs/cpu.md`), and profiles the prompt again with the output layer given a 2-D row (an
experiment here, not the connector's code).

Then, on the demo model (hidden 64: nothing to compute), the fixed cost of one new token split into
the model's step, the sampler, and the text stream, against the whole loop (`engine.generate`).

    python benchmarks/profile_cpu_step.py                                  # 2 layers, float32 and float16, then the demo
    python benchmarks/profile_cpu_step.py --dtypes bfloat16 --steps 8
    python benchmarks/profile_cpu_step.py --skip-6b                        # the demo only (seconds)
    python benchmarks/profile_cpu_step.py --skip-6b --decode eager         # the same, transformers' eager step
    python benchmarks/profile_cpu_step.py --prompt-only --dtypes bfloat16 float16
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/profile_cpu_step.py --dtypes float32 int8
                                                                           # as an AVX2 CPU runs it (the benchmark's --isa avx2)
"""
import argparse, os, statistics, sys, time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent)); sys.path.insert(0, str(HERE))

import torch

GROUPS = [  # (group, operation names): an operation's own (self) time goes to the first group naming it
    ('matrix products', {'aten::mm', 'aten::addmm', 'aten::bmm', 'aten::baddbmm', 'aten::_mkldnn_linear', 'aten::mkldnn_linear',
                         'mkldnn::_linear_pointwise', 'aten::_addmm_activation', 'aten::matmul', 'aten::linear', 'aten::dot', 'aten::mv',
                         'aten::_weight_int8pack_mm', 'quantized::linear_dynamic', 'aten::_weight_int4pack_mm_for_cpu'}),
    ('copies, dtype conversions', {'aten::copy_', 'aten::to', 'aten::_to_copy', 'aten::clone', 'aten::contiguous', 'aten::cat',
                                   'aten::index_copy_', 'aten::index_put_', 'aten::empty_like', 'aten::_unsafe_view', 'aten::slice_scatter',
                                   'aten::index_select', 'aten::embedding', 'aten::stack'}),
    ('softmax, mask, attention glue', {'aten::softmax', 'aten::_softmax', 'aten::where', 'aten::masked_fill', 'aten::scaled_dot_product_attention',
                                       'aten::_scaled_dot_product_flash_attention_for_cpu', 'aten::eq', 'aten::ge', 'aten::le', 'aten::lt',
                                       'aten::gt', 'aten::bitwise_and', 'aten::logical_and', 'aten::arange', 'aten::isfinite', 'aten::max',
                                       'aten::argmax'}),
    ('norms, element-wise', {'aten::rms_norm', 'aten::_fused_rms_norm', 'aten::mul', 'aten::add', 'aten::add_', 'aten::mul_', 'aten::silu',
                             'aten::sigmoid', 'aten::rsqrt', 'aten::pow', 'aten::mean', 'aten::sub', 'aten::neg', 'aten::div', 'aten::cos',
                             'aten::sin', 'aten::addcmul_', 'aten::addcmul', 'aten::chunk', 'aten::split', 'aten::glu'}),
]


def group_of(name: str) -> str:
    for g, names in GROUPS:
        if name in names: return g
    return 'other operations'


def weight_bytes(model: torch.nn.Module) -> int:
    "Bytes of the 2-D weights a one-token step reads: every linear layer and the output layer (not the embedding, of which one row is read)."
    emb = model.get_input_embeddings().weight
    packed = sum(m.in_features * m.out_features for m in model.modules() if hasattr(m, 'packed'))  # `DynamicInt8Linear`: int8, packed
    return packed + sum(p.numel() * p.element_size() for p in [*model.parameters(), *model.buffers()] if p.dim() == 2 and p is not emb)


def step_profile(engine, prompt: list[int], steps: int) -> dict:
    "Time `steps` one-token steps, then record as many with the profiler; return the figures."
    dec = engine.decoder
    token = torch.tensor([prompt[-1]])
    with torch.inference_mode():
        dec.start(prompt, 3 * steps + 8, reuse=False)
        dec.prefill()
        for _ in range(4): dec.step(token)  # warm
        times = []
        for _ in range(steps):
            t = time.perf_counter(); dec.step(token); times.append(time.perf_counter() - t)
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            t = time.perf_counter()
            for _ in range(steps): dec.step(token)
            profiled = (time.perf_counter() - t) / steps
        dec.end(None)
    # each operation's own time as the median of its calls (times its calls per step): on a busy machine a call that
    # was preempted counts as a typical one, as the unprofiled step's median leaves out the preempted steps
    own, shapes = defaultdict(list), {}
    for e in prof.events():
        own[e.name].append(e.self_cpu_time_total / 1e6)
        shapes.setdefault(e.name, str(e.input_shapes)[:90])
    groups, ops, calls = defaultdict(float), [], 0
    for name, ts in own.items():
        per_step = statistics.median(ts) * len(ts) / steps
        groups[group_of(name)] += per_step
        calls += len(ts)
        ops.append((per_step, name, len(ts) / steps, shapes[name]))
    ops.sort(reverse=True)
    return dict(step_s=statistics.median(times), profiled_s=profiled, groups=dict(groups), ops=ops, calls=calls / steps)


def prompt_profile(engine, prompt: list[int], label: str, rows: int = 6):
    "Record one prompt (after a short warm-up) and print its time and the operations that take most of it."
    from torch.profiler import ProfilerActivity, profile
    dec = engine.decoder
    with torch.inference_mode():
        dec.start(prompt[:16], 2, reuse=False); dec.prefill(); dec.end(None)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            t = time.perf_counter(); dec.start(prompt, 2, reuse=False); dec.prefill(); took = time.perf_counter() - t
        dec.end(None)
    print(f'\n### {label}: a {len(prompt)}-token prompt\n\n{took:.2f} s ({len(prompt) / took:,.0f} tok/s); the operations that take most of it:\n')
    print('| operation | own time s | share | calls | input shapes |\n|---|---|---|---|---|')
    for e in sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)[:rows]:
        print(f'| {e.key} | {e.self_cpu_time_total / 1e6:.2f} | {e.self_cpu_time_total / 1e6 / took:.0%} | {e.count} | {str(e.input_shapes)[:80]} |')


def output_layer_check(dtype: torch.dtype, vocab: int = 65024, hidden: int = 4096, prompt: int = 128):
    """The output layer's product for the last prompt position, as `logits_to_keep=1` hands it over (a slice of the prompt's
    hidden states: batch stride prompt x hidden) and as a fresh row: in bfloat16 and float16 the slice sends F.linear down a
    batched path that copies the whole (transposed) weight first."""
    F = torch.nn.functional
    w, h = torch.randn(vocab, hidden, dtype=dtype) * 0.02, torch.randn(1, prompt, hidden, dtype=dtype)
    print(f'\n### the output layer ({vocab} x {hidden}, {str(dtype)[6:]}) on the last prompt position\n\n| input | ms | strides |\n|---|---|---|')
    with torch.inference_mode():
        for name, x in [('h[:, -1:] (what logits_to_keep=1 gives)', h[:, -1:]), ('h[:, -1:].reshape(1, -1) (2-D)', h[:, -1:].reshape(1, -1)),
                        ('a fresh (1, 1, hidden) tensor, as a decoding step has', h[:, -1:].reshape(1, 1, -1).clone(memory_format=torch.contiguous_format))]:
            F.linear(x[..., :64], w[:64, :64])  # warm the path on a small case
            t = time.perf_counter(); F.linear(x, w); ms = (time.perf_counter() - t) * 1e3
            print(f'| {name} | {ms:,.0f} | {tuple(x.stride())} |')


def flat_output_layer(model):
    "An experiment, not the connector's code: the output layer multiplies a 2-D copy of its input's rows (see `output_layer_check`)."
    head = model.get_output_embeddings()
    forward = head.forward
    head.forward = lambda x: forward(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)


def show(label: str, model, r: dict):
    in_ops = sum(r['groups'].values())
    wb = weight_bytes(model)
    mm = r['groups'].get('matrix products', 0.0)
    print(f'\n### {label}\n')
    print(f'one step: {r["step_s"] * 1e3:.1f} ms ({1 / r["step_s"]:.2f} tok/s) unprofiled, {r["profiled_s"] * 1e3:.1f} ms profiled; '
          f'{r["calls"]:.0f} operations per step; weights read per step {wb / 1e9:.2f} GB: '
          f'{wb / r["step_s"] / 1e9:.1f} GB/s over the whole step, {wb / mm / 1e9 if mm else 0:.1f} GB/s inside the matrix products\n')
    print('| where (operations: median own time of a call x calls per step) | ms per step | share of the step (unprofiled median) |\n|---|---|---|')
    for g, s in sorted(r['groups'].items(), key=lambda x: -x[1]):
        print(f'| {g} | {s * 1e3:.3f} | {s / r["step_s"]:.0%} |')
    rest = r['step_s'] - in_ops
    print(f'| Python, dispatch, threads waking (step minus operations) | {rest * 1e3:.3f} | {rest / r["step_s"]:.0%} |' if rest > 0 else
          f'| Python, dispatch, threads waking (step minus operations) | none to see: the operations\' medians add up to more than the step\'s ({rest * 1e3:.1f} ms) | |')
    print('\ntop operations by own time:\n\n| operation | ms per step | calls per step | input shapes (first call) |\n|---|---|---|---|')
    for s, k, n, shapes in r['ops'][:10]: print(f'| {k} | {s * 1e3:.2f} | {n:.0f} | {shapes} |')


def demo_fixed_cost(cache: Path, tokens: int, decode: str = 'auto'):
    "The demo model's cost per new token: the whole loop, the model's step alone, the sampler alone, the text stream alone."
    import bench_cpu_vs_llamacpp as bench
    from fc_chatglm.sampling import Sampler
    from fc_chatglm.engine import TextStream
    from fc_chatglm.load import LoadOptions, load_engine
    from fc_chatglm.schemas import GenerationParams, TextRequest
    engine = load_engine(LoadOptions(model=bench.demo_folder(cache), device='cpu', dtype='float32', decode=decode))
    engine.text_as, engine.fmt.eos_ids = 'raw', set()
    text = bench.prompt_text(lambda s: len(engine.fmt.text_ids(s)), 128)
    req = TextRequest(message=text, settings={'temperature': 0, 'maxResponseTokens': tokens})
    engine.generate(req); engine.decoder.end(None)
    gaps = []  # the time between two new tokens in engine.generate, as on_text sees it: its median
    for _ in range(3):
        last = [None]
        def on_text(piece):
            now = time.perf_counter()
            if last[0] is not None: gaps.append(now - last[0])
            last[0] = now
        out = engine.generate(req, on_text=on_text); engine.decoder.end(None)
    loop_mean = (out.seconds - out.first_token_s) / (out.tokens - 1)
    loop = statistics.median(gaps)
    prompt = engine.fmt.text_ids(text)
    r = step_profile(engine, prompt, tokens)
    logits = torch.randn(1, engine.model.config.vocab_size)
    sampler = Sampler(GenerationParams.from_settings(req.settings))
    def per_call(f, xs):
        ts = []
        for x in xs:
            t = time.perf_counter(); f(x); ts.append(time.perf_counter() - t)
        return statistics.median(ts)
    samp = per_call(lambda _: int(sampler(logits)), range(tokens))
    stream = TextStream(engine.fmt.decode)
    text_s = per_call(stream.push, [int(i) for i in torch.randint(3, 590, (tokens,))])
    print(f'\n### demo model: the fixed cost of a new token ({engine.decode} decoding)\n')
    print('| part | ms per token |\n|---|---|')
    print(f'| the whole loop (engine.generate: median time between two pieces of text; mean {loop_mean * 1e3:.3f}) | {loop * 1e3:.3f} |')
    print(f'| the model\'s step (Decoder.step, median of a tight loop) | {r["step_s"] * 1e3:.3f} |')
    print(f'| of which operations (profiler, own times) | {sum(r["groups"].values()) * 1e3:.3f} ({r["calls"]:.0f} operations) |')
    print(f'| the sampler (greedy: max, isfinite, argmax, masked_fill; int(); median) | {samp * 1e3:.3f} |')
    print(f'| the text stream (TextStream.push: SentencePiece decode; median) | {text_s * 1e3:.3f} |')
    show('demo model, one step', engine.model, r)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--layers', type=int, default=2)
    ap.add_argument('--dtypes', nargs='+', default=['float32', 'float16'],
                    help='float32, float16, bfloat16, int8 (--quantize 8bit) or int8-dynamic (--quantize 8bit-dynamic)')
    ap.add_argument('--steps', type=int, default=16, help='steps timed, and as many profiled')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--demo-tokens', type=int, default=200)
    ap.add_argument('--decode', default='auto', help="the decoder's mode: auto (direct on a CPU), direct or eager")
    ap.add_argument('--skip-6b', action='store_true')
    ap.add_argument('--prompt-only', action='store_true', help='the 6B-width prompts only (no steps, no demo)')
    ap.add_argument('--cache', type=Path, default=Path(os.environ.get('FC_CHATGLM_CACHE', Path.home()/'.cache'/'fc_chatglm'))/'bench')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import bench_cpu_vs_llamacpp as bench
    from fc_chatglm.load import LoadOptions, load_engine, native_half
    print(f'torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads; native bfloat16 '
          f'{native_half(torch.bfloat16)}, float16 {native_half(torch.float16)}; load average {os.getloadavg()[0]:.1f}' if hasattr(os, 'getloadavg') else '')
    if not a.skip_6b:
        a.cache.mkdir(parents=True, exist_ok=True)
        folder = bench.checkpoint(a.cache, a.layers)
        for dt in a.dtypes:
            engine = load_engine(LoadOptions(model=folder, device='cpu', decode=a.decode, **bench.MODES.get(dt, dict(dtype=dt))))
            prompt = engine.fmt.text_ids(bench.prompt_text(lambda s: len(engine.fmt.text_ids(s)), 128))
            if not a.prompt_only: show(f'6B width, {a.layers} layers, {dt}', engine.model, step_profile(engine, prompt, a.steps))
            prompt_profile(engine, prompt, f'6B width, {a.layers} layers, {dt}')
            if dt in ('float16', 'bfloat16'):
                flat_output_layer(engine.model)
                prompt_profile(engine, prompt, f'6B width, {a.layers} layers, {dt}, the output layer given a 2-D row (an experiment)')
            del engine
            if dt in ('float16', 'bfloat16') and not a.prompt_only: output_layer_check(getattr(torch, dt))
    if not a.prompt_only: demo_fixed_cost(a.cache, a.demo_tokens, a.decode)


if __name__ == '__main__':
    main()
