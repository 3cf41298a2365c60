# Normal use of the notes app by two clients: pages, note reads and writes,
# host lookups (each spawns the app's shell and getent, so spawning is
# normal here).
client() {
  i=$1
  while :; do
    i=$((i+1))
    curl -s -m 5 "http://$SCN_IP:8080/" "http://$SCN_IP:8080/notes" >/dev/null
    case $((i % 4)) in
      0) curl -s -m 5 "http://$SCN_IP:8080/lookup?name=localhost" >/dev/null ;;
      1) curl -s -m 5 -d "note $i" "http://$SCN_IP:8080/notes" >/dev/null ;;
      2) curl -s -m 5 "http://$SCN_IP:8080/lookup?name=ip6-localhost" >/dev/null ;;
    esac
    sleep 0.1
  done
}
client 0 &
client 2
