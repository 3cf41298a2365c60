curl -sf -m 2 "http://$SCN_IP:8081/page1.html" >/dev/null
