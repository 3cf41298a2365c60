# The demo's load, lighter: benchmark bursts on 2 connections, and a
# counter bumped every 50 ms on a third.
( while :; do redis-cli -h "$SCN_IP" incr visits >/dev/null; sleep 0.05; done ) &
while :; do
  redis-benchmark -h "$SCN_IP" -q -n 1500 -c 2 -t set,get,incr,lpush,lrange_100 >/dev/null
  sleep 1
done
