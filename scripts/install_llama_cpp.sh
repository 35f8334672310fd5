#!/usr/bin/env bash
# Installs llama-cpp-python[server] into the active Python environment, built without
# AMX and without -march=native.
#
# Why: the default build compiles with -march=native, which on our VMs emits AMX tile
# instructions that the CPU advertises but the hypervisor traps: the server dies with
# SIGILL (exit 132) on the first multi-token prompt. See shared/reference/embedded-lm.md §5.
#
# The C++ build takes about 5 minutes on 2 cores. The built wheel is kept in
# $QDAIF_CACHE/wheels (default ~/.cache/qdaif/wheels), keyed by version and flags, so a
# second run on the same machine installs in seconds. pip's own wheel cache is bypassed
# (--no-cache-dir): it keys wheels by source only, not by CMAKE_ARGS, and could hand back
# a native (crashing) build made earlier by a plain `pip install llama-cpp-python`.
#
# Usage: bash scripts/install_llama_cpp.sh            (idempotent; exits 0 when installed)
#        FORCE=1 bash scripts/install_llama_cpp.sh    (rebuild even if a cached wheel exists)
#        VERBOSE=1 ...                                 (show the compiler's output)
# It installs into $PYTHON if set, else the repository's .venv, else the active python;
# run it after scripts/setup.sh (its check imports qdaif to find the embedded model).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/_llama_flags.sh
VERSION="$LLAMA_CPP_VERSION"
PY="$LLAMA_PY"
quiet=(-q); [[ -n "${VERBOSE:-}" ]] && quiet=(-v)

# Instruction sets: what this CPU has, never native, never AMX (see _llama_flags.sh).
llama_cmake_flags "$VERSION"
CMAKE_FLAGS="${LLAMA_CMAKE_FLAGS[*]}"
key="$LLAMA_FLAGS_KEY"
WHEEL_DIR="$QDAIF_CACHE_DIR/wheels/llama-cpp-python-${VERSION}-${key}"

# Runs the embedded model on a multi-token prompt in a child process: a SIGILL build fails here.
smoke_test() {
    "$PY" - <<'EOF'
import subprocess, sys
code = r'''
import llama_cpp, uvicorn, fastapi, sse_starlette, starlette_context, pydantic_settings
from qdaif.lm._embedded import embedded_gguf_path
llm = llama_cpp.Llama(model_path=str(embedded_gguf_path()), n_ctx=256, n_threads=1, verbose=False)
out = llm.create_completion("The capital of France is a city called", max_tokens=3, temperature=0)
assert isinstance(out["choices"][0]["text"], str)
print("llama_cpp", llama_cpp.__version__, "ok")
'''
r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
sys.stdout.write(r.stdout)
if r.returncode:
    sys.stderr.write(r.stderr[-2000:])
    if r.returncode in (-4, 132):
        sys.stderr.write("llama_cpp crashed with SIGILL: this build uses instructions the CPU traps\n")
sys.exit(r.returncode and 1)
EOF
}

installed="$("$PY" -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))' 2>/dev/null || true)"
marker="$("$PY" -c 'import llama_cpp, os; print(os.path.dirname(llama_cpp.__file__))' 2>/dev/null || true)/.qdaif-build"
if [[ -z "${FORCE:-}" && "$installed" == "$VERSION" && -f "$marker" && "$(cat "$marker")" == "$key" ]]; then
    if smoke_test; then
        echo "install_llama_cpp: llama-cpp-python $VERSION (no-AMX build $key) already installed"
        exit 0
    fi
fi

start=$(date +%s)
if [[ -n "${FORCE:-}" || -z "$(ls "$WHEEL_DIR"/llama_cpp_python-*.whl 2>/dev/null)" ]]; then
    echo "install_llama_cpp: building llama-cpp-python $VERSION from source (about 5 min on 2 cores)"
    echo "install_llama_cpp: CMAKE_ARGS=$CMAKE_FLAGS"
    rm -rf "$WHEEL_DIR" && mkdir -p "$WHEEL_DIR"
    CMAKE_ARGS="$CMAKE_FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
        "$PY" -m pip wheel "${quiet[@]}" --no-deps --no-cache-dir --no-binary llama-cpp-python \
        "llama-cpp-python==$VERSION" -w "$WHEEL_DIR"
fi
wheel="$(ls "$WHEEL_DIR"/llama_cpp_python-*.whl | head -n1)"
"$PY" -m pip install -q --no-cache-dir --force-reinstall --no-deps "$wheel"
# Now its dependencies and the server extra (uvicorn, fastapi, sse-starlette, ...) from the index.
"$PY" -m pip install -q "${wheel}[server]"
"$PY" -c 'import llama_cpp, os, sys; open(os.path.join(os.path.dirname(llama_cpp.__file__), ".qdaif-build"), "w").write(sys.argv[1])' "$key"
smoke_test
echo "install_llama_cpp: done in $(( $(date +%s) - start )) s"
