// Command memsrv is the plane benchmark's workload: it holds a given amount
// of touched, incompressible memory and answers each request line on TCP
// with a counter, so a client sees both availability and preserved state.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"sync/atomic"
)

func main() {
	mib := flag.Int("mem", 64, "MiB of memory to hold")
	addr := flag.String("listen", ":7000", "TCP address")
	flag.Parse()
	if *mib < 0 || *mib > 64<<10 {
		fmt.Fprintln(os.Stderr, "memsrv: -mem out of range")
		os.Exit(2)
	}
	debug.SetGCPercent(-1) // the heap is one block; no collector churn
	buf := make([]byte, *mib<<20)
	x := uint64(0x9e3779b97f4a7c15)
	for i := 0; i+8 <= len(buf); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for j := 0; j < 8; j++ {
			buf[i+j] = byte(x >> (8 * j))
		}
	}
	// Go listens with MPTCP by default, which CRIU cannot dump.
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	l, err := lc.Listen(context.Background(), "tcp4", *addr)
	if err != nil {
		log.Fatal(err)
	}
	var n atomic.Int64
	for {
		c, err := l.Accept()
		if err != nil {
			continue
		}
		go func(c net.Conn) {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				if _, err := r.ReadString('\n'); err != nil {
					return
				}
				v := n.Add(1)
				if len(buf) > 0 {
					buf[int(v)%len(buf)]++
				}
				if _, err := c.Write([]byte(strconv.FormatInt(v, 10) + "\n")); err != nil {
					return
				}
			}
		}(c)
	}
}
