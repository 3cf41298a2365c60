# Visitors on three keep-alive connections: pages under / and /static/
# (60 requests per connection, as browsers fetch a page's assets), a miss
# now and then.
client() {
  i=$1
  while :; do
    i=$((i+1))
    urls=""
    for j in $(seq 30); do
      urls="$urls http://$SCN_IP:8081/page$(( j % 5 + 1 )).html http://$SCN_IP:8081/static/page$(( (i + j) % 5 + 1 )).html"
    done
    [ $((i % 5)) = 0 ] && urls="$urls http://$SCN_IP:8081/missing$i"
    curl -s -m 20 $urls >/dev/null
    sleep 0.05
  done
}
client 0 &
client 7 &
client 13
