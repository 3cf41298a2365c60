# The app's load: two long connections writing and reading notes at 40
# transactions a second, and a fresh login every second (reports, cron jobs).
export PGPASSWORD=app-pass
sql=$(mktemp)
cat > "$sql" <<SQL
INSERT INTO notes (body) VALUES ('note ' || (random() * 1000)::int);
SELECT id, body FROM notes ORDER BY id DESC LIMIT 10;
SQL
( while :; do psql -h "$SCN_IP" -U app -d appdb -Atc 'select count(*) from notes' >/dev/null 2>&1; sleep 1; done ) &
exec pgbench -h "$SCN_IP" -U app -n -c 2 -R 40 -T 86400 -f "$sql" appdb >/dev/null 2>&1
