#!/usr/bin/env python
"""llama.cpp for the CPU benchmark: build it from PyPI's `llama-cpp-python` source, convert ChatGLM2 checkpoints to GGUF, quantize them.

`llama-cpp-python`'s source distribution vendors llama.cpp (`vendor/llama.cpp`), so PyPI alone gives
llama.cpp's C++ sources, its converter (`convert_hf_to_gguf.py`) and its `gguf-py`: nothing else is
downloaded. The build (cmake, a C++ compiler: `llama-bench`, `llama-quantize` and `llama-simple` only)
goes into a cache folder outside the repository and is reused when present:

    ~/.cache/fc_chatglm/llama.cpp-<version>/sdist      the unpacked source distribution
    ~/.cache/fc_chatglm/llama.cpp-<version>/build      cmake's build folder (the native build); the programs in build/bin
    ~/.cache/fc_chatglm/llama.cpp-<version>/build-avx2 a build for one instruction set (`--isa avx2` or `avx512`, see `ISA`)

`--isa avx2` builds llama.cpp as an AVX2 machine runs it (GGML_NATIVE off, AVX2/FMA/F16C on, every AVX-512
and AMX option off), on any x86 machine: with the connector emulating AVX2 too (`ATEN_CPU_CAPABILITY`,
`ONEDNN_MAX_CPU_ISA`), one machine gives the figures of a desktop without AVX-512. `--isa avx512` is AVX-512
with VNNI and BF16 but no AMX (Zen 4, Ice Lake and later without AMX).

The converter sends a ChatGLM2 (`ChatGLMModel` in config.json) down GLM-4's vocabulary path, which
asks transformers for the checkpoint's remote tokenizer code. A ChatGLM2's tokenizer is a plain
SentencePiece file (tokenizer.model) with five special tokens after its pieces, so `convert` imports
the converter and replaces that one method, in memory, by the converter's own SentencePiece path plus
the specials and the padding to `padded_vocab_size` (`chatglm2_vocab`); the vendored file is never edited.

The converter needs numpy, sentencepiece, torch, transformers, safetensors, pyyaml, tqdm and requests
(the connector's own requirements and the shared environment have them; checked with numpy 2.4.6,
sentencepiece 0.2.3, torch 2.13.0, transformers 5.24.0, PyYAML 6.0.3, tqdm 4.70.1) and uses the
vendored gguf-py, so `pip install gguf` is not needed.

    python benchmarks/llamacpp.py build                       # download (once) and build; prints the build time
    python benchmarks/llamacpp.py build --force --no-amx       # again, native but without AMX (see below)
    python benchmarks/llamacpp.py build --isa avx2             # an AVX2-only build beside the native one

On a virtual machine whose CPU reports AMX (Sapphire Rapids and later) but whose host does not let
programs use it, the native build's AMX kernels (Q8_0, Q4_0 ...) die (SIGILL or SIGSEGV at
`ldtilecfg` in `ggml_backend_amx_mul_mat`); the benchmark then runs those types with `--repack 0`
and says so. Rebuilding with `--no-amx` (`-mno-amx-tile -mno-amx-int8 -mno-amx-bf16` before GCC's
`-march=native`, which keeps every other native instruction) keeps the CPU repacking of Q4_0 instead.
    python benchmarks/llamacpp.py convert FOLDER OUT.gguf --outtype f16
    python benchmarks/llamacpp.py quantize IN.gguf OUT.gguf Q4_0
"""
import argparse, json, os, shutil, subprocess, sys, tarfile, time
from pathlib import Path

VERSION = '0.3.36'  # llama-cpp-python on PyPI; its vendor/llama.cpp is llama.cpp commit 0c1e570 (the converter patch below is checked against it)
TARGETS = ('llama-bench', 'llama-quantize', 'llama-simple')
NO_AMX = '-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'  # compiler flags that keep ggml's AMX kernels out of a native build
CACHE = Path(os.environ.get('FC_CHATGLM_CACHE', Path.home()/'.cache'/'fc_chatglm'))


_OFF = ('AVX512', 'AVX512_VBMI', 'AVX512_VNNI', 'AVX512_BF16', 'AVX_VNNI', 'AMX_TILE', 'AMX_INT8', 'AMX_BF16')
_X86 = ('SSE42', 'AVX', 'AVX2', 'FMA', 'F16C', 'BMI2')
ISA = {'native': (),  # cmake options of each build: `native` is GGML_NATIVE (-march=native), the others turn it off
       'avx2': (*(f'-DGGML_{o}=ON' for o in _X86), *(f'-DGGML_{o}=OFF' for o in _OFF)),
       'avx512': (*(f'-DGGML_{o}=ON' for o in _X86 + _OFF[:4]), *(f'-DGGML_{o}=OFF' for o in _OFF[4:]))}

def root(version: str = VERSION, cache: Path = CACHE) -> Path: return Path(cache)/f'llama.cpp-{version}'
def source(version: str = VERSION, cache: Path = CACHE) -> Path: return root(version, cache)/'sdist'/'vendor'/'llama.cpp'
def build_dir(version: str = VERSION, cache: Path = CACHE, isa: str = 'native') -> Path:
    "cmake's build folder for `isa` (a key of `ISA`)."
    if isa not in ISA: raise ValueError(f'unknown instruction set {isa!r}: one of {", ".join(ISA)}')
    return root(version, cache)/('build' if isa == 'native' else f'build-{isa}')
def bin_dir(version: str = VERSION, cache: Path = CACHE, isa: str = 'native') -> Path: return build_dir(version, cache, isa)/'bin'

def exe(name: str, version: str = VERSION, cache: Path = CACHE, isa: str = 'native') -> Path:
    "The path of a built program (`.exe` on Windows; multi-config generators put it under Release)."
    d = bin_dir(version, cache, isa)
    for p in (d/name, d/f'{name}.exe', d/'Release'/f'{name}.exe'):
        if p.exists(): return p
    raise FileNotFoundError(f'{name} is not built in {d}: run `python benchmarks/llamacpp.py build`')


def fetch_source(version: str = VERSION, cache: Path = CACHE) -> Path:
    "Download llama-cpp-python's source distribution with pip (once) and unpack it; return vendor/llama.cpp."
    src = source(version, cache)
    if (src/'CMakeLists.txt').exists(): return src
    dl = root(version, cache)/'download'
    dl.mkdir(parents=True, exist_ok=True)
    archive = dl/f'llama_cpp_python-{version}.tar.gz'
    if not archive.exists():
        print(f'downloading llama-cpp-python {version} (source, about 75 MB) with pip', flush=True)
        subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary', ':all:',
                        f'llama-cpp-python=={version}', '-d', str(dl)], check=True)
    tmp = root(version, cache)/'unpack'
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(archive) as t: t.extractall(tmp, filter='data')
    (inner,) = tmp.iterdir()
    shutil.rmtree(root(version, cache)/'sdist', ignore_errors=True)
    inner.rename(root(version, cache)/'sdist'); tmp.rmdir()
    return src


def build(version: str = VERSION, cache: Path = CACHE, jobs: int = 2, native: bool = True,
          cmake_args: tuple[str, ...] = (), # more cmake options, e.g. ('-DGGML_NATIVE=OFF', '-DGGML_AVX2=ON', ...)
          force: bool = False, # configure and build again even when the programs exist (after changing cmake_args)
          isa: str = 'native', # which build (a key of `ISA`): its own folder and cmake options
          targets: tuple[str, ...] = TARGETS, # the programs to build
          ) -> float:
    "Build the programs in `targets` (skipped when they exist); return the seconds the build took (the first build's, when cached)."
    out = build_dir(version, cache, isa)
    stamp = out/'BUILD_SECONDS'
    try:
        if force: raise FileNotFoundError
        for t in targets: exe(t, version, cache, isa)
        return float(stamp.read_text()) if stamp.exists() else 0.0
    except FileNotFoundError: pass  # not built yet
    src = fetch_source(version, cache)
    t0 = time.perf_counter()
    subprocess.run(['cmake', '-S', str(src), '-B', str(out), '-DCMAKE_BUILD_TYPE=Release', f'-DGGML_NATIVE={"ON" if native and isa == "native" else "OFF"}',
                    '-DLLAMA_OPENSSL=OFF', '-DLLAMA_BUILD_TESTS=OFF', '-DLLAMA_BUILD_SERVER=OFF', *ISA[isa], *cmake_args], check=True)
    subprocess.run(['cmake', '--build', str(out), '--config', 'Release', '-j', str(jobs), '--target', *targets], check=True)
    seconds = time.perf_counter() - t0
    stamp.write_text(f'{seconds:.0f}\n')
    return seconds


# ---- conversion: runs in its own process (`python llamacpp.py convert ...`), which imports the vendored converter

SPECIALS = ('[MASK]', '[gMASK]', '[sMASK]', 'sop', 'eop')  # after the SentencePiece pieces, as ChatGLM2's tokenizer appends them

def chatglm2_vocab(self):
    "ChatGLMModel.set_vocab for ChatGLM2: the converter's SentencePiece vocabulary, the five specials after it, padded to padded_vocab_size."
    import gguf
    from conversion import SentencePieceTokenTypes as T
    from sentencepiece import SentencePieceProcessor
    n_sp = SentencePieceProcessor(model_file=str(self.dir_model/'tokenizer.model')).vocab_size()
    size = self.hparams.get('padded_vocab_size') or self.hparams['vocab_size']
    tokens, scores, types = self._create_vocab_sentencepiece()  # pieces (padded to config's vocab_size if it has one)
    tokens, scores, types = tokens[:n_sp], scores[:n_sp], types[:n_sp]
    for name in SPECIALS: tokens.append(name.encode()); scores.append(0.0); types.append(T.CONTROL)
    if len(tokens) > size: raise ValueError(f'{len(tokens)} tokens do not fit padded_vocab_size {size}')
    for i in range(len(tokens), size): tokens.append(f'[PAD{i}]'.encode()); scores.append(-1000.0); types.append(T.UNUSED)
    w = self.gguf_writer
    w.add_tokenizer_model('llama'); w.add_tokenizer_pre('default')
    w.add_token_list(tokens); w.add_token_scores(scores); w.add_token_types(types)
    gguf.SpecialVocab(self.dir_model, n_vocab=len(tokens)).add_to_gguf(w)


def _convert_here(folder: str, out: str, outtype: str):
    src = fetch_source()  # the converter comes with the source distribution (downloaded once; no build needed)
    sys.path.insert(0, str(src))
    os.chdir(src)  # the converter finds some of its files relative to the working folder
    import convert_hf_to_gguf as conv
    from conversion.chatglm import ChatGLMModel
    ChatGLMModel.set_vocab = chatglm2_vocab  # in memory only
    sys.argv = ['convert_hf_to_gguf.py', folder, '--outfile', out, '--outtype', outtype]
    conv.main()


def _run(cmd: list[str]):
    "Run `cmd` quietly; on failure show the end of what it printed."
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors='replace')
    if r.returncode: raise RuntimeError(f'{Path(cmd[1] if cmd[0] == sys.executable else cmd[0]).name} failed ({r.returncode}):\n' + r.stdout[-3000:])


def convert(folder: Path, out: Path, outtype: str) -> float:
    "Convert a ChatGLM2 checkpoint folder to GGUF (f32, f16, bf16 or q8_0) with llama.cpp's converter, in a child process; return its seconds."
    t0 = time.perf_counter()
    tmp = Path(str(out) + '.part')
    _run([sys.executable, str(Path(__file__).resolve()), 'convert', str(Path(folder).resolve()), str(tmp.resolve()), '--outtype', outtype])
    tmp.replace(out)
    return time.perf_counter() - t0


def quantize(src: Path, out: Path, kind: str, threads: int = 2, isa: str = 'native') -> float:
    "Quantize a GGUF file with llama-quantize (Q8_0, Q4_0, ...) of the `isa` build; return its seconds."
    t0 = time.perf_counter()
    tmp = Path(str(out) + '.part')
    _run([str(exe('llama-quantize', isa=isa)), str(src), str(tmp), kind, str(threads)])
    tmp.replace(out)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    b = sub.add_parser('build'); b.add_argument('--jobs', type=int, default=2)
    b.add_argument('--force', action='store_true', help='configure and build again')
    b.add_argument('--no-amx', action='store_true', help='leave out the AMX kernels (GCC and Clang)')
    b.add_argument('--isa', default='native', choices=list(ISA), help='instruction set: native (-march=native) or an x86 level, in its own folder')
    b.add_argument('--targets', nargs='+', default=list(TARGETS), help='programs to build')
    b.add_argument('cmake_args', nargs='*', help='more cmake options, after --: e.g. -- -DGGML_NATIVE=OFF -DGGML_AVX512=ON')
    c = sub.add_parser('convert'); c.add_argument('folder'); c.add_argument('out'); c.add_argument('--outtype', default='f16')
    q = sub.add_parser('quantize'); q.add_argument('src'); q.add_argument('out'); q.add_argument('kind')
    a = ap.parse_args()
    if a.cmd == 'build':
        no_amx = ('-DCMAKE_C_FLAGS=' + NO_AMX, '-DCMAKE_CXX_FLAGS=' + NO_AMX) if a.no_amx else ()
        s = build(jobs=a.jobs, cmake_args=no_amx + tuple(a.cmake_args), force=a.force, isa=a.isa, targets=tuple(a.targets))
        print(f'llama.cpp (llama-cpp-python {VERSION}) built in {bin_dir(isa=a.isa)} in {s:.0f} s (cached: the first build\'s time)')
    elif a.cmd == 'convert': _convert_here(a.folder, a.out, a.outtype)
    else: print(f'{quantize(Path(a.src), Path(a.out), a.kind):.1f} s')


if __name__ == '__main__':
    main()
