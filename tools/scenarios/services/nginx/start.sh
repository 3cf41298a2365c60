# nginx-light from Debian, with the classic alias off-by-slash flaw:
# /static (no slash) aliased to a folder with one, so /static../x reads
# the site's folder outside static/.
mkdir -p "$SCN_WORK/site/static" "$SCN_WORK/site/config" "$SCN_WORK/logs"
for i in 1 2 3 4 5; do head -c $((i * 2000)) /usr/share/common-licenses/GPL-3 > "$SCN_WORK/site/static/page$i.html"; done
printf 'DB_PASSWORD=hunter2\nAPI_KEY=sk-live-5f2a9c\n' > "$SCN_WORK/site/config/.env"
cat > "$SCN_WORK/nginx.conf" <<CONF
daemon off;
worker_processes 2;
pid $SCN_WORK/nginx.pid;
error_log $SCN_WORK/logs/error.log;
events { worker_connections 256; }
http {
  access_log $SCN_WORK/logs/access.log;
  client_body_temp_path $SCN_WORK/body;
  proxy_temp_path $SCN_WORK/proxy;
  fastcgi_temp_path $SCN_WORK/fastcgi;
  uwsgi_temp_path $SCN_WORK/uwsgi;
  scgi_temp_path $SCN_WORK/scgi;
  server {
    listen $SCN_IP:8081;
    location / { root $SCN_WORK/site/static; }
    location /static { alias $SCN_WORK/site/static/; }
  }
}
CONF
exec /usr/sbin/nginx -c "$SCN_WORK/nginx.conf" -e "$SCN_WORK/logs/error.log"
