exec /usr/lib/postgresql/15/bin/postgres -D "$SCN_WORK/pgdata"
