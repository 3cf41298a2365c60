i=0
for role in postgres app; do
  n=100; [ $role = app ] && n=40
  for p in $(seq $n); do
    i=$((i+1))
    PGPASSWORD="guess-$p-123456" PGCONNECT_TIMEOUT=5 psql -h "$SCN_IP" -U $role -d postgres -Atc 'select 1' >/dev/null 2>&1 && exit 1
  done
done
echo "$i guesses, none right" > "$SCN_ATTACKER/bruteforce.out"
