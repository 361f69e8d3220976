# Sourced by the bench scripts: a release daemon on a fresh port with the vendored runtime and
# embedding model. Set `work`, `repo` and `vendor` first; `write_config` takes extra TOML lines
# on stdin. Defines: bin, port, base, sb (the CLI on this config), start (sets `ready` to the
# seconds until /readyz answered 200), stop.
bin="$repo/target/release/sparkbrain"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
pid=""

# write_config CONFIG DATA_DIR MEMORY_MODE INSTANCES, then extra TOML on stdin.
write_config() {
  cat > "$1" <<TOML
data_dir = "$2"
[server]
bind = "127.0.0.1:$port"
[runtime]
onnxruntime_library = "$vendor/onnxruntime/libonnxruntime.so.1.31.1"
memory_mode = "$3"
[models]
embedding_model = "$vendor/models/all-MiniLM-L6-v2/model.onnx"
embedding_tokenizer = "$vendor/models/all-MiniLM-L6-v2/tokenizer.json"
embedding_query_model = "$vendor/models/all-MiniLM-L6-v2/model.query-int8.onnx"
embedding_instances = $4
[log]
level = "warn"
format = "terminal"
TOML
  cat >> "$1"
}

config="$work/config.toml"
sb() { "$bin" --config "$config" "$@"; }
# Not in a subshell: `pid` must survive for `stop`.
start() {
  local t0; t0=$(date +%s.%N)
  "$bin" --config "$config" serve >>"$work/daemon.log" 2>&1 & pid=$!
  until curl -sf "$base/readyz" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$work/daemon.log"; exit 1; }
    sleep 0.02
  done
  ready=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$t0" "$(date +%s.%N)")
}
stop() { kill "$pid"; wait "$pid" || true; pid=""; }
# An admin's API key on the running daemon (the admin must exist).
admin_key() {
  local token
  token=$(curl -sf -X POST "$base/api/v1/auth/token" -d username=admin -d "password=$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
  curl -sf -X POST "$base/api/v1/keys" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{"name":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}
