# Runs before the recording, outside the cgroup, as postgres: a fresh
# cluster with password (scram) logins over TCP, the app's role and data.
set -e
export PATH=/usr/lib/postgresql/15/bin:$PATH
echo postgres-admin-pass > "$SCN_WORK/pwfile"
initdb -D "$SCN_WORK/pgdata" -U postgres --auth-local=trust --auth-host=scram-sha-256 --pwfile="$SCN_WORK/pwfile" >/dev/null
cat >> "$SCN_WORK/pgdata/postgresql.conf" <<CONF
listen_addresses = '$SCN_IP'
unix_socket_directories = '$SCN_WORK'
shared_buffers = 16MB
max_connections = 30
log_min_messages = warning
CONF
echo "host all all $SCN_IP/32 scram-sha-256" >> "$SCN_WORK/pgdata/pg_hba.conf"
echo "host all all $SCN_PEER/32 scram-sha-256" >> "$SCN_WORK/pgdata/pg_hba.conf"
postgres --single -D "$SCN_WORK/pgdata" postgres >/dev/null <<SQL
CREATE ROLE app LOGIN PASSWORD 'app-pass';
CREATE DATABASE appdb OWNER app;
GRANT pg_execute_server_program TO app;
SQL
postgres --single -D "$SCN_WORK/pgdata" appdb >/dev/null <<SQL
CREATE TABLE notes (id serial PRIMARY KEY, body text, at timestamptz DEFAULT now());
CREATE TABLE secrets (name text, value text);
INSERT INTO secrets VALUES ('api_key', 'sk-live-5f2a9c'), ('stripe', 'rk_live_81f0');
ALTER TABLE notes OWNER TO app;
ALTER TABLE secrets OWNER TO app;
SQL
