# Normal use of the notes app: pages, note reads and writes, host lookups
# (each spawns the app's shell and getent, so spawning is normal here).
i=0
while :; do
  i=$((i+1))
  curl -s -m 5 "http://$SCN_IP:8080/" >/dev/null
  curl -s -m 5 "http://$SCN_IP:8080/notes" >/dev/null
  case $((i % 4)) in
    0) curl -s -m 5 "http://$SCN_IP:8080/lookup?name=localhost" >/dev/null ;;
    1) curl -s -m 5 -d "note $i" "http://$SCN_IP:8080/notes" >/dev/null ;;
    2) curl -s -m 5 "http://$SCN_IP:8080/lookup?name=ip6-localhost" >/dev/null ;;
  esac
  sleep 0.1
done
