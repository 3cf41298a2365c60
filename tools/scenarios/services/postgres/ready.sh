PGPASSWORD=app-pass psql -h "$SCN_IP" -U app -d appdb -Atc 'select 1' >/dev/null 2>&1
