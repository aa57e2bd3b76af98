# Shared by scripts/local-swarm and scripts/bench-client: a swarm of cairnd
# processes on loopback, each with its own directory under $work, and an
# owner identity in $work/owner. Source it, then call swarm_start N.
# Cleans up on exit unless CAIRN_KEEP=1.

bin="$PWD/target/release"
work="${CAIRN_WORK:-$(mktemp -d /tmp/cairn-swarm.XXXXXX)}"
mkdir -p "$work"
swarm_pids=()

swarm_cleanup() {
  for pid in "${swarm_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${CAIRN_KEEP:-0}" = 1 ]; then
    echo "Kept $work"
  else
    rm -rf "$work"
  fi
}
trap swarm_cleanup EXIT INT TERM

export CAIRN_HOME="$work/owner"
cairn() { "$bin/cairn" "$@"; }

swarm_build() {
  cargo build --release --locked --quiet --bin cairnd --bin cairn
}

# swarm_start N: an owner identity and a swarm it founds, then N nodes
# that admit its client as their administrator, each invited into the
# swarm (so members admit each other: node 1, the owner's steward, dials
# the others to audit and repair), added to the owner's node list, each
# its own site. Waits until all listen. CAIRN_GRACE_S (default 10) is how
# long a node may be gone before its shards are rebuilt elsewhere.
swarm_start() {
  local nodes="$1" i dir port id base client_key
  cairn init >"$work/init.txt"
  client_key="$(awk '/^Client key:/ {print $3}' "$work/init.txt")"
  cairn swarm create >/dev/null
  base=$((20000 + RANDOM % 30000))
  for i in $(seq 1 "$nodes"); do
    dir="$work/node$i"
    mkdir -p "$dir/disk"
    port=$((base + i))
    cat >"$dir/cairnd.toml" <<CONF
state_dir = "$dir/state"
listen = "127.0.0.1:$port"
disks = ["$dir/disk"]
[store]
reserve_mib = 0
[network]
allow = ["$client_key"]
[steward]
grace_s = ${CAIRN_GRACE_S:-10}
tick_s = 1
CONF
    id="$("$bin/cairnd" --config "$dir/cairnd.toml" --print-id)"
    echo "$id" >"$dir/id"
    "$bin/cairnd" --config "$dir/cairnd.toml" 2>"$dir/log" &
    swarm_pids+=($!)
    echo "$!" >"$dir/pid"
    if [ "$i" = 1 ]; then
      cairn add-node "$id" "127.0.0.1:$port" --site "house-$i" --steward
    else
      cairn add-node "$id" "127.0.0.1:$port" --site "house-$i"
    fi
  done
  for i in $(seq 1 "$nodes"); do
    for _ in $(seq 1 100); do
      grep -q listening "$work/node$i/log" && break
      sleep 0.1
    done
    if ! grep -q listening "$work/node$i/log"; then
      echo "node $i did not start:" >&2
      cat "$work/node$i/log" >&2
      exit 1
    fi
    id="$(cat "$work/node$i/id")"
    cairn join "$id" --invite "$(cairn swarm invite "$id")" >/dev/null
  done
}

# swarm_weakest: the fewest healthy shards of any segment of any file.
swarm_weakest() {
  cairn --json status | python3 -c 'import json,sys; print(min(json.loads(l)["healthy_shards_min"] for l in sys.stdin))'
}

# swarm_wait_full TOTAL SECONDS: waits until every segment has TOTAL healthy
# shards again; fails after SECONDS.
swarm_wait_full() {
  local total="$1" limit="$2" start
  start=$(date +%s)
  while [ "$(swarm_weakest)" -lt "$total" ]; do
    if [ $(($(date +%s) - start)) -ge "$limit" ]; then
      echo "no full redundancy after $limit s; the steward (node 1) said:" >&2
      grep -i steward "$work/node1/log" | tail -20 >&2
      exit 1
    fi
    sleep 1
  done
}

# swarm_stop_node I: SIGTERM node I and wait for it to exit.
swarm_stop_node() {
  local pid
  pid="$(cat "$work/node$1/pid")"
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}
