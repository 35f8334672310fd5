#!/usr/bin/env bash
# Starts llama.cpp's llama-server (built by scripts/build_llama_server.sh) in the background
# on 127.0.0.1, or stops one that this script started.
#
#   bash scripts/serve_llama.sh --port 8080 --parallel 16        # the embedded model, 16 slots
#   bash scripts/serve_llama.sh --port 8080 --parallel 4 --model my.gguf --ctx 4096 --threads 2
#   bash scripts/serve_llama.sh --stop --port 8080
#
# Starting waits until GET /health answers 200 and prints `pid=<pid> url=http://127.0.0.1:P/v1`
# (use the URL as model.base_url with model=openai). The server decodes its N slots together
# (continuous batching); the context size it is given is --ctx per slot times N, as
# llama-server splits its context evenly over the slots. Its pid file and log are
# $QDAIF_CACHE/run/llama-server-<port>.{pid,log} (default ~/.cache/qdaif/run); --stop
# removes both.
# Options: --parallel N (default 4), --ctx C tokens per slot (default 2048), --threads T
# (default: the number of CPU cores), --model GGUF (default: a 16-bit copy of the embedded
# SmolLM2 model, BF16 on CPUs with AVX512-BF16 and F16 elsewhere, written once to
# $QDAIF_CACHE/models: llama.cpp reads prompts 2-4 times as fast from it as from the
# wheel's Q4_1 file on a CPU; docs/serving.md),
# --bin PATH (default: the cached build for this machine's flags), --timeout S to wait for
# /health (default 120). Environment: PYTHON (to find the embedded model; default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_llama_flags.sh

die() { echo "serve_llama: $*" >&2; exit 1; }
port="" parallel=4 ctx=2048 threads="$(nproc)" model="" bin="" stop=0 wait_s=120
while [[ $# -gt 0 ]]; do
    case "$1" in
        --port) port="${2:-}"; shift 2 ;;
        --parallel) parallel="${2:-}"; shift 2 ;;
        --ctx) ctx="${2:-}"; shift 2 ;;
        --threads) threads="${2:-}"; shift 2 ;;
        --model) model="${2:-}"; shift 2 ;;
        --bin) bin="${2:-}"; shift 2 ;;
        --timeout) wait_s="${2:-}"; shift 2 ;;
        --stop) stop=1; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) die "unknown option '$1'; see: bash scripts/serve_llama.sh --help" ;;
    esac
done
[[ -n "$port" ]] || die "--port is required, e.g. --port 8080"
for pair in "port:$port" "parallel:$parallel" "ctx:$ctx" "threads:$threads" "timeout:$wait_s"; do
    [[ "${pair#*:}" =~ ^[1-9][0-9]*$ ]] || die "--${pair%%:*} needs a positive integer, got '${pair#*:}'"
done
run_dir="$QDAIF_CACHE_DIR/run"
pidfile="$run_dir/llama-server-$port.pid"
logfile="$run_dir/llama-server-$port.log"

# The pid in the pid file, if that process is still a llama-server (not a reused pid).
live_pid() {
    local pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q llama-server || return 1
    echo "$pid"
}

stop_server() {
    local pid
    if ! pid="$(live_pid)"; then
        rm -f "$pidfile"
        echo "serve_llama: no server of ours on port $port"
        return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid"
        echo "serve_llama: pid $pid ignored SIGTERM for 10 s; killed"
    fi
    rm -f "$pidfile" "$logfile"
    echo "serve_llama: stopped pid=$pid (port $port)"
}

# Polls /health until 200; fails at once if the server exits (its log's tail is shown).
wait_healthy() {
    local pid="$1" deadline=$((SECONDS + wait_s))
    while (( SECONDS < deadline )); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pidfile"
            tail -n 20 "$logfile" >&2
            die "llama-server exited before answering /health (log above, full log: $logfile)"
        fi
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" || true)" == 200 ]] && return 0
        sleep 0.2
    done
    kill -TERM "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    die "llama-server did not answer /health within $wait_s s (log: $logfile)"
}

start_server() {
    local pid
    if pid="$(live_pid)"; then die "a server is already running on port $port (pid=$pid); stop it with --stop --port $port"; fi
    if [[ -z "$bin" ]]; then bin="$(llama_server_bin "$LLAMA_CPP_VERSION")"; fi
    [[ -x "$bin" ]] || die "no llama-server at $bin; build it with: bash scripts/build_llama_server.sh"
    if [[ -z "$model" ]]; then
        model="$("$LLAMA_PY" -c 'from qdaif.lm._embedded import embedded_gguf_16bit; print(embedded_gguf_16bit())')" \
            || die "cannot find the embedded model; pass --model GGUF"
    fi
    [[ -f "$model" ]] || die "no model file at $model"
    if curl -s -o /dev/null "http://127.0.0.1:$port/health"; then die "port $port is already in use"; fi
    mkdir -p "$run_dir"
    # setsid: the server outlives this script and the terminal's Ctrl-C.
    setsid "$bin" --host 127.0.0.1 --port "$port" --model "$model" --alias "$(basename "$model" .gguf)" \
        --parallel "$parallel" --ctx-size $((ctx * parallel)) --no-kv-unified --cont-batching \
        --threads "$threads" --threads-batch "$threads" --no-webui > "$logfile" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$pidfile"
    wait_healthy "$pid"
    echo "pid=$pid url=http://127.0.0.1:$port/v1"
}

if (( stop )); then stop_server; else start_server; fi
