#!/usr/bin/env bash
# make demo: ESCAPE's main job on the local lab.
#
# It brings up a 3-host lab, puts a real stateful service (redis, from
# Debian's packages) under the control plane's protection on h1, starts the
# eBPF sensor on every host, drives the service with a real client from the
# lab's client namespace while the sensor learns its normal behaviour, and
# shows what a user watches: the sensor's JSON events, its live counters and
# the plane's state, including the safe checkpoint it took. It cleans up on
# exit, Ctrl-C included; a second run works the same.
#
# Still to come (issue 7): the scripted attack and the sensor-to-plane
# bridge that turns the detection into rollback and migration on its own.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=$PWD/bin
OUT=$PWD/out/demo
LEARN=${DEMO_LEARN_SECONDS:-20}
SERVICE_IP=198.18.1.10
PLANE_SOCK=/run/escape-demo/plane.sock
mkdir -p "$OUT"
: >"$OUT/events.jsonl"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pids=()
cleanup() {
  set +e
  say "cleaning up"
  "$BIN/escape-plane" --socket "$PLANE_SOCK" remove redis >/dev/null 2>&1
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  "$BIN/escape-lab" down
  echo "logs and events kept in $OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "1/6 preflight"
"$BIN/escape-sensor" doctor --mode lab

say "2/6 lab: 3 test hosts, each a network namespace with its own containerd"
"$BIN/escape-lab" up --hosts 3

say "3/6 control plane, protecting redis on h1 at $SERVICE_IP"
cat >"$OUT/plane.yaml" <<EOF
socket: $PLANE_SOCK
state: $OUT/plane-state.db
audit: $OUT/audit.jsonl
lab_root: /var/lib/escape-lab
EOF
rm -f "$OUT/plane-state.db"
"$BIN/escape-plane" serve --config "$OUT/plane.yaml" >"$OUT/plane.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$PLANE_SOCK" ] && break; sleep 0.2; done
[ -S "$PLANE_SOCK" ] || { echo "plane did not start; see $OUT/plane.log"; tail "$OUT/plane.log"; exit 1; }
"$BIN/escape-plane" --socket "$PLANE_SOCK" deploy redis --image redis --host h1 --ip "$SERVICE_IP" \
  --label escape.mtd/class=stateful --label escape.identity=redis \
  -- /usr/bin/redis-server --port 6379 --protected-mode no --save '' --appendonly no

say "4/6 sensor on every lab host (JSON events: $OUT/events.jsonl)"
"$BIN/escape-sensor" run --lab /var/lib/escape-lab --events "file:$OUT/events.jsonl" --epoch-events \
  --learn-epochs 600 --profiles "$OUT/profiles" --listen 127.0.0.1:9464 \
  --control /run/escape-demo/sensor.sock >"$OUT/sensor.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q '"watched"' "$OUT/events.jsonl" 2>/dev/null && break; sleep 0.2; done
grep -m1 '"watched"' "$OUT/events.jsonl" || { echo "sensor did not pick up redis; see $OUT/sensor.log"; tail "$OUT/sensor.log"; exit 1; }

say "5/6 a real client drives redis from the client namespace for ${LEARN}s while the sensor learns"
ip netns exec escape-client redis-cli -h "$SERVICE_IP" SET greeting "hello from the client"
end=$((SECONDS + LEARN))
while [ $SECONDS -lt $end ]; do
  ip netns exec escape-client redis-benchmark -h "$SERVICE_IP" -q -n 2000 -c 4 -t set,get,incr,lpush >/dev/null
  printf '.'
done
echo
echo "epochs so far: $(grep -c '"epoch"' "$OUT/events.jsonl" || true)"
grep '"epoch"' "$OUT/events.jsonl" | tail -n 2

say "6/6 what an operator sees"
"$BIN/escape-sensor" top --once --socket /run/escape-demo/sensor.sock 2>/dev/null || true
curl -fsS http://127.0.0.1:9464/metrics 2>/dev/null | grep -E '^escape_sensor_(syscalls_total|epochs_total|anomalous_epochs_total|bpf_run_count_total)' | head -n 6 || true
"$BIN/escape-plane" --socket "$PLANE_SOCK" checkpoint redis --force
"$BIN/escape-plane" --socket "$PLANE_SOCK" status
echo "the client still reads its data: $(ip netns exec escape-client redis-cli -h "$SERVICE_IP" GET greeting)"
echo "audit log: $OUT/audit.jsonl ($(wc -l <"$OUT/audit.jsonl") decisions)"
