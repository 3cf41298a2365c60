[ "$(redis-cli -h "$SCN_IP" ping 2>/dev/null)" = PONG ]
