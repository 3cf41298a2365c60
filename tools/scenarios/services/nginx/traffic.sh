# Visitors: pages under / and /static/, a miss now and then.
i=0
while :; do
  i=$((i+1))
  curl -s -m 5 "http://$SCN_IP:8081/page$((i % 5 + 1)).html" >/dev/null
  curl -s -m 5 "http://$SCN_IP:8081/static/page$((i % 3 + 1)).html" >/dev/null
  [ $((i % 10)) = 0 ] && curl -s -m 5 "http://$SCN_IP:8081/missing$i" >/dev/null
  sleep 0.05
done
