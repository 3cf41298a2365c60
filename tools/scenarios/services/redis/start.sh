# redis-server from Debian's redis-tools: the package ships the server as
# redis-check-rdb, which picks its role from argv[0] (as the lab's image).
ln -sf /usr/bin/redis-check-rdb "$SCN_WORK/redis-server"
exec "$SCN_WORK/redis-server" --bind "$SCN_IP" --port 6379 --dir "$SCN_WORK" --save 60 100 --appendonly no --protected-mode no
