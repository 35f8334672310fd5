# Sourced by install_llama_cpp.sh, build_llama_server.sh and serve_llama.sh: the CMake flags of every
# llama.cpp build of this project, so the Python binding and the server binary are
# compiled for the same instruction sets.
#
# Never -march=native and never AMX: on our VMs the CPU advertises AMX tile instructions
# that the hypervisor traps, so a native build dies with SIGILL (exit 132) on the first
# multi-token prompt. Each other extension is switched on exactly when /proc/cpuinfo
# lists it.
#
# Also sets LLAMA_CPP_VERSION (the llama-cpp-python release whose sdist vendors the
# llama.cpp sources), QDAIF_CACHE_DIR (where built artefacts are kept) and LLAMA_PY.
LLAMA_CPP_VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
QDAIF_CACHE_DIR="${QDAIF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qdaif}"
# The Python the scripts use (sourced from the repository root): $PYTHON, else the
# repository's .venv, else the python on PATH.
if [[ -n "${PYTHON:-}" ]]; then LLAMA_PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then LLAMA_PY=.venv/bin/python
else LLAMA_PY=python; fi

# Sets: LLAMA_CMAKE_FLAGS (array) and LLAMA_FLAGS_KEY (12 hex digits of their hash,
# with the version in $1, used to name cached builds).
llama_cmake_flags() {
    local version="$1" pair cpu opt
    LLAMA_CMAKE_FLAGS=(-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
    for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI \
                avx512f:AVX512 avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
        cpu="${pair%%:*}"; opt="${pair##*:}"
        if grep -q -w "$cpu" /proc/cpuinfo 2>/dev/null; then
            LLAMA_CMAKE_FLAGS+=("-DGGML_${opt}=ON")
        else
            LLAMA_CMAKE_FLAGS+=("-DGGML_${opt}=OFF")
        fi
    done
    LLAMA_FLAGS_KEY="$(printf '%s' "$version ${LLAMA_CMAKE_FLAGS[*]}" | sha256sum | cut -c1-12)"
}

# Prints the cached llama-server binary's path for version $1 (built or not).
llama_server_bin() {
    llama_cmake_flags "$1"
    printf '%s\n' "$QDAIF_CACHE_DIR/bin/llama-server-$1-$LLAMA_FLAGS_KEY"
}
