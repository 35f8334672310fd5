#!/usr/bin/env bash
# Builds llama.cpp's own server, llama-server (parallel slots, continuous batching,
# OpenAI-compatible API), from the llama.cpp sources vendored in the llama-cpp-python
# sdist of the version install_llama_cpp.sh installs, with the same instruction-set flags
# (scripts/_llama_flags.sh: never native, never AMX, which dies with SIGILL on our VMs).
#
# Only the llama-server target is built: static (one self-contained binary), without
# tests, examples, the web UI, libcurl or OpenSSL. About 6 minutes on 2 cores the first
# time; the binary is kept as $QDAIF_CACHE/bin/llama-server-<version>-<flags hash>
# (default ~/.cache/qdaif/bin), so a second run only smoke-tests it (seconds).
# The smoke test serves the embedded model (scripts/serve_llama.sh), asks for one
# completion and stops the server.
#
# Usage: bash scripts/build_llama_server.sh          (idempotent; prints the binary's path)
#        FORCE=1 bash scripts/build_llama_server.sh  (rebuild)
#        VERBOSE=1 ...                                (show the compiler's output)
# Needs cmake and a C++ compiler; without a system cmake, `pip install cmake` goes into
# $PYTHON (default .venv). Run it after scripts/setup.sh (the smoke test imports qdaif).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_llama_flags.sh
VERSION="$LLAMA_CPP_VERSION"
PY="$LLAMA_PY"
BIN="$(llama_server_bin "$VERSION")"
llama_cmake_flags "$VERSION"  # LLAMA_CMAKE_FLAGS in this shell (the line above ran in a subshell)

work="" smoke_port=""
# The smoke test's server and the build folder do not outlive the script (error, Ctrl-C).
cleanup() {
    if [[ -n "$smoke_port" ]]; then bash scripts/serve_llama.sh --stop --port "$smoke_port" >/dev/null 2>&1 || true; fi
    if [[ -n "$work" ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Serves the embedded model on a free port (one thread) and asks for one 4-token completion.
smoke_test() {
    local out
    smoke_port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    PYTHON="$PY" bash scripts/serve_llama.sh --bin "$BIN" --port "$smoke_port" --parallel 1 --ctx 512 --threads 1 >/dev/null || return 1
    out="$(curl -s -m 60 "http://127.0.0.1:$smoke_port/v1/completions" -H 'Content-Type: application/json' \
        -d '{"prompt": "The capital of France is a city called", "max_tokens": 4, "temperature": 0}' || true)"
    bash scripts/serve_llama.sh --stop --port "$smoke_port" >/dev/null
    smoke_port=""
    if ! grep -q '"text"' <<< "$out"; then
        echo "build_llama_server: the smoke test got no completion: ${out:0:300}" >&2
        return 1
    fi
    echo "build_llama_server: smoke test ok ($("$BIN" --version 2>&1 | grep -m1 -i version || true))"
}

# Finds cmake: the system's, else the one of the pip package (installed into $PY).
find_cmake() {
    if command -v cmake >/dev/null 2>&1; then command -v cmake; return; fi
    echo "build_llama_server: no cmake on PATH; installing the cmake package into $PY" >&2
    "$PY" -m pip install -q cmake >&2
    "$PY" -c 'import cmake, os; print(os.path.join(cmake.CMAKE_BIN_DIR, "cmake"))'
}

build() {
    local src cmake_bin quiet=(-q)
    [[ -n "${VERBOSE:-}" ]] && quiet=()
    cmake_bin="$(find_cmake)"
    work="$(mktemp -d)"
    echo "build_llama_server: building llama-server from llama-cpp-python $VERSION's llama.cpp (about 6 min on 2 cores)"
    echo "build_llama_server: flags ${LLAMA_CMAKE_FLAGS[*]}"
    "$PY" -m pip download "${quiet[@]}" --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$work"
    tar -xzf "$work"/llama_cpp_python-"$VERSION".tar.gz -C "$work"
    src="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"
    [[ -f "$src/tools/server/CMakeLists.txt" ]] || { echo "build_llama_server: no tools/server in $src" >&2; return 1; }
    "$cmake_bin" -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release "${LLAMA_CMAKE_FLAGS[@]}" \
        -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
        > "$work/configure.log" 2>&1 || { tail -n 30 "$work/configure.log" >&2; return 1; }
    "$cmake_bin" --build "$work/build" --config Release --target llama-server -j "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
        > "$work/build.log" 2>&1 || { tail -n 40 "$work/build.log" >&2; return 1; }
    if [[ -n "${VERBOSE:-}" ]]; then cat "$work/configure.log" "$work/build.log"; fi
    mkdir -p "$(dirname "$BIN")"
    install -m 755 "$work/build/bin/llama-server" "$BIN.tmp"
    mv "$BIN.tmp" "$BIN"
}

if [[ -z "${FORCE:-}" && -x "$BIN" ]] && smoke_test; then
    echo "build_llama_server: llama-server ($VERSION, flags $LLAMA_FLAGS_KEY) already built: $BIN"
    exit 0
fi
start=$(date +%s)
build
smoke_test || { echo "build_llama_server: the new binary fails its smoke test (did it die with SIGILL? see the log above)" >&2; exit 1; }
echo "build_llama_server: built $BIN in $(( $(date +%s) - start )) s"
