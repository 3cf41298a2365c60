# The notes web app (python3 from Debian) as the scenario's user.
printf 'API_KEY=sk-live-5f2a9c\nDB_PASSWORD=hunter2\n' > "$SCN_WORK/secrets.env"
exec /usr/bin/python3 "$SCN_SVC/app.py"
