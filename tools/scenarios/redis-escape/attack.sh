# Runs in the container as its (unprivileged) user: every probe fails.
cat /proc/self/cgroup /proc/1/cgroup
head -20 /proc/self/mountinfo
grep Cap /proc/self/status
echo '|/tmp/x %p' > /proc/sys/kernel/core_pattern
echo 1 > /proc/sys/kernel/sysrq
mount -t tmpfs none /mnt
mkdir -p /tmp/.cg-$$ && mount -t cgroup -o rdma cgroup /tmp/.cg-$$; rmdir /tmp/.cg-$$
nsenter -t 1 -m -u -i -n -p true
unshare -Urm sh -c 'mount -t tmpfs none /mnt && echo userns-mount-ok'
find / -maxdepth 5 \( -path /proc -o -path /sys \) -prune -o \( -name docker.sock -o -name containerd.sock -o -name crio.sock -o -name '*.sock' \) -print 2>/dev/null | head -20
ls -la /run/containerd /var/run/docker.sock /run/crio 2>&1
exit 0
