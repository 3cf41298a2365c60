package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// redisRootFS is the lab's redis image, unpacked (tools/lab builds it).
const redisRootFS = "/var/lib/escape-lab/shared/images/redis/rootfs"

// redisThroughput runs the lab's redis-server in the watched cgroup (chroot
// into the image's root filesystem, loopback port) and returns
// redis-benchmark's SET and GET requests per second against it.
func redisThroughput(ctx context.Context, e *env, requests int, withSensor bool) (map[string]float64, error) {
	if _, err := os.Stat(redisRootFS + "/usr/bin/redis-server"); err != nil {
		return nil, fmt.Errorf("redis image not unpacked (run escape-lab up): %w", err)
	}
	if withSensor {
		teardown, err := sensorCase(e, e.w)
		if err != nil {
			return nil, err
		}
		defer teardown() //nolint:errcheck
	}
	fd, err := os.Open(e.w)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	const port = "6391"
	srv := exec.CommandContext(ctx, "chroot", redisRootFS, "/usr/bin/redis-server", "--port", port,
		"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no")
	srv.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("redis-server: %w", err)
	}
	defer func() {
		srv.Process.Kill()
		srv.Wait()
	}()
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 100*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if i > 100 {
			return nil, fmt.Errorf("redis-server did not listen: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, err := exec.CommandContext(ctx, "redis-benchmark", "-h", "127.0.0.1", "-p", port, "-n",
		strconv.Itoa(requests), "-c", "10", "-t", "set,get", "-q", "--csv").Output()
	if err != nil {
		return nil, fmt.Errorf("redis-benchmark: %w", err)
	}
	res := map[string]float64{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 2 {
			continue
		}
		name := strings.Trim(f[0], `"`)
		if v, err := strconv.ParseFloat(strings.Trim(f[1], `"`), 64); err == nil {
			res[name] = v
		}
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("redis-benchmark printed nothing usable: %q", out)
	}
	return res, nil
}
