#!/usr/bin/env bash
# compare.sh: planebench over the networked path against the direct path of
# a given commit (before the multi-host refactor), in one session on one
# machine, and a table of medians with the networked/direct ratio per size
# and mode.
#
#   tools/bench/planebench/compare.sh [-c COMMIT] [-r ROUNDS] [-s SIZES] [-n REPS] [-m MODES] [-o OUT]
#
# Each round runs, in an order that rotates from round to round:
#   direct  the baseline commit's planebench on its own single-machine lab
#           (a detached worktree at $BASE_WT, its lab named $BASE_LAB);
#   shared  this checkout's planebench on the lab $ESCAPE_LAB with shared storage;
#   stream  the same without shared storage (images stream agent to agent).
# Medians pool every rep of every round. Run as root from the repository's
# root; the labs are taken down at the end.
set -euo pipefail

COMMIT=bf821b0 ROUNDS=1 SIZES=1,64,256 REPS=3 MODES=staged,full OUT=out/compare
while getopts c:r:s:n:m:o: o; do
  case $o in
    c) COMMIT=$OPTARG ;; r) ROUNDS=$OPTARG ;; s) SIZES=$OPTARG ;; n) REPS=$OPTARG ;;
    m) MODES=$OPTARG ;; o) OUT=$OPTARG ;; *) sed -n 2,16p "$0"; exit 2 ;;
  esac
done
repo=$(git rev-parse --show-toplevel)
cd "$repo"
export ESCAPE_LAB=${ESCAPE_LAB:-escbench}
BASE_LAB=${BASE_LAB:-escbase}
BASE_WT=${BASE_WT:-$(dirname "$repo")/base}
for l in "$ESCAPE_LAB" "$BASE_LAB"; do
  case $l in escape|escnode|escmig) echo "compare.sh: will not use the lab $l (someone else's)" >&2; exit 2 ;; esac
done
mkdir -p "$OUT"
rm -f "$OUT"/direct-*.* "$OUT"/shared-*.* "$OUT"/stream-*.* "$OUT/runs.log"

# The baseline: a detached worktree at COMMIT, with a throwaway main that
# brings its (old, single-machine) lab up under a name of its own.
if [ ! -d "$BASE_WT" ]; then git worktree add --detach "$BASE_WT" "$COMMIT"; fi
want=$(git rev-parse "$COMMIT^{commit}")
have=$(git -C "$BASE_WT" rev-parse HEAD)
[ "$want" = "$have" ] || { echo "compare.sh: $BASE_WT is at $have, not $COMMIT" >&2; exit 1; }
mkdir -p "$BASE_WT/tools/baselab"
cat >"$BASE_WT/tools/baselab/main.go" <<'GO'
// Throwaway (compare.sh): bring the old-style lab up or down under a name of its own.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/escape-mtd/escape/tools/lab"
)

func main() {
	name := os.Getenv("ESCAPE_LAB")
	if name == "" || name == "escape" || len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ESCAPE_LAB=<name> baselab up|down")
		os.Exit(2)
	}
	opts := []lab.Option{lab.WithName(name)}
	var err error
	switch os.Args[1] {
	case "up":
		_, err = lab.Up(context.Background(), append(opts, lab.WithHosts(3))...)
	case "down":
		err = lab.Down(context.Background(), opts...)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
GO
(cd "$BASE_WT" && make build >/dev/null && go build -o bin/baselab ./tools/baselab && go build -o bin/planebench ./tools/bench/planebench)
make build >/dev/null
go build -o bin/planebench ./tools/bench/planebench

cleanup() {
  ESCAPE_LAB=$BASE_LAB "$BASE_WT/bin/baselab" down || true
  bin/escape-lab down || true
}
trap cleanup EXIT

run() { # variant round
  local v=$1 r=$2 f="$OUT/$1-$2"
  echo "== round $r: $v ($(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT/runs.log" >&2
  case $v in
    direct)
      ESCAPE_LAB=$BASE_LAB "$BASE_WT/bin/baselab" up >/dev/null
      (cd "$BASE_WT" && bin/planebench -lab "/var/lib/$BASE_LAB-lab" -sizes "$SIZES" -reps "$REPS" -modes "$MODES") >"$f.md" 2>"$f.err" ||
        echo "   $v failed: $(tail -1 "$f.err")" | tee -a "$OUT/runs.log" >&2
      ESCAPE_LAB=$BASE_LAB "$BASE_WT/bin/baselab" down ;;
    shared | stream)
      bin/planebench -shared-storage="$([ "$v" = shared ] && echo true || echo false)" -sizes "$SIZES" -reps "$REPS" -modes "$MODES" >"$f.md" 2>"$f.err" ||
        echo "   $v failed: $(tail -1 "$f.err")" | tee -a "$OUT/runs.log" >&2 ;;
  esac
  # A rep whose migration failed (and was reverted) is in the log as FAILED; table.sh leaves it out.
  grep -h "FAILED" "$f.err" | sed "s/^/   $v: /" | cut -c1-300 >>"$OUT/runs.log" || true
}
variants=(direct shared stream)
for ((r = 1; r <= ROUNDS; r++)); do
  for ((i = 0; i < 3; i++)); do run "${variants[(i + r - 1) % 3]}" "$r"; done
done
bin/escape-lab down >/dev/null || true
echo "== done ($(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT/runs.log" >&2

echo "Machine: nproc $(nproc), $(uname -r); runs (start time, load average):"
sed 's/^/    /' "$OUT/runs.log"
echo
"$(dirname "$0")/table.sh" "$OUT" "$MODES"
