#!/usr/bin/env bash
# table.sh OUT MODES: the table compare.sh prints, from the planebench logs
# in OUT (direct-*.err, shared-*.err, stream-*.err): medians over every rep
# of every round, milliseconds, and the networked/direct ratio.
set -euo pipefail
out=$1 modes=${2:-staged,full}
samples=$(mktemp)
trap 'rm -f "$samples"' EXIT
for f in "$out"/direct-*.err "$out"/shared-*.err "$out"/stream-*.err; do
  [ -e "$f" ] || continue
  v=$(basename "$f" | cut -d- -f1)
  awk -v v="$v" -v modes="$modes" '
    function ms(s) {
      sub(/[,)]$/, "", s)
      if (s ~ /ms$/) { sub(/ms$/, "", s); return s + 0 }
      if (s ~ /µs$/) { sub(/µs$/, "", s); return s / 1000 }
      if (s ~ /ns$/) { sub(/ns$/, "", s); return s / 1e6 }
      if (s ~ /m[0-9.]+s$/) { split(s, a, "m"); sub(/s$/, "", a[2]); return a[1] * 60000 + a[2] * 1000 }
      if (s ~ /s$/) { sub(/s$/, "", s); return s * 1000 }
      return s + 0
    }
    BEGIN { n = split(modes, m, ",") }
    /^== [0-9]+ MiB/ { size = $2 }
    /^  rep [0-9]+:/ {
      for (i = 1; i <= NF; i++) {
        w = $i
        if (w == "frozen" && i > 1) print v, size, $(i-1), "frozen", ms($(i+1))
        if (w == "gap" && $(i-2) == "frozen") print v, size, $(i-3), "gap", ms($(i+1))
        if (w == "checkpoint") {
          # new: "<mode> checkpoint X (gap Y) rollback Z (gap W)"; old: "checkpoint X (gap Y), rollback Z (gap W)"
          mode = $(i-1); sub(/:$/, "", mode)
          ck = ms($(i+1)); rb = ms($(i+5))
          if (mode ~ /^[0-9]+$/) { for (k = 1; k <= n; k++) { print v, size, m[k], "checkpoint", ck; print v, size, m[k], "rollback", rb } }
          else { print v, size, mode, "checkpoint", ck; print v, size, mode, "rollback", rb }
        }
      }
    }' "$f" >>"$samples"
done
med() { # variant size mode metric
  awk -v v="$1" -v s="$2" -v m="$3" -v k="$4" '$1==v && $2==s && $3==m && $4==k {print $5}' "$samples" | sort -n |
    awk '{a[NR]=$1} END {if (NR==0) {print "-"; exit} if (NR%2) printf "%.0f\n", a[(NR+1)/2]; else printf "%.0f\n", (a[NR/2]+a[NR/2+1])/2}'
}
count() { awk -v v="$1" -v s="$2" -v m="$3" '$1==v && $2==s && $3==m && $4=="gap"' "$samples" | wc -l; }
rat() { if [ "$1" = - ] || [ "$2" = - ] || [ "$2" = 0 ]; then echo -; else awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; fi; }
sizes=$(awk '{print $2}' "$samples" | sort -un)
echo "Medians, ms (n = reps pooled over rounds, per variant). gap = client-observed migration gap; frozen = the plane's frozen time."
echo
echo "| MiB | mode | n (d/sh/st) | direct gap | shared gap | shared / direct | stream gap | stream / direct | direct frozen | shared frozen | stream frozen | checkpoint d/sh/st | rollback d/sh/st |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for s in $sizes; do
  for m in ${modes//,/ }; do
    dg=$(med direct "$s" "$m" gap) sg=$(med shared "$s" "$m" gap) tg=$(med stream "$s" "$m" gap)
    echo "| $s | $m | $(count direct "$s" "$m")/$(count shared "$s" "$m")/$(count stream "$s" "$m") | $dg | $sg | $(rat "$sg" "$dg") | $tg | $(rat "$tg" "$dg") |" \
      "$(med direct "$s" "$m" frozen) | $(med shared "$s" "$m" frozen) | $(med stream "$s" "$m" frozen) |" \
      "$(med direct "$s" "$m" checkpoint)/$(med shared "$s" "$m" checkpoint)/$(med stream "$s" "$m" checkpoint) |" \
      "$(med direct "$s" "$m" rollback)/$(med shared "$s" "$m" rollback)/$(med stream "$s" "$m" rollback) |"
  done
done
echo
for v in shared stream; do
  r=$(rat "$(med "$v" 64 staged gap)" "$(med direct 64 staged gap)")
  echo "Thresholds ($v): staged gap at 64 MiB $(med "$v" 64 staged gap) ms (want <= 300); networked/direct staged gap at 64 MiB ${r} (want <= 1.15)" \
    "; all sizes:$(for s in $sizes; do printf ' %s MiB %s' "$s" "$(rat "$(med "$v" "$s" staged gap)" "$(med direct "$s" staged gap)")"; done)"
done
