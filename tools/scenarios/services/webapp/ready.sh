curl -sf -m 2 "http://$SCN_IP:8080/" >/dev/null
