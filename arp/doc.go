// Package arp moves an IP address between network namespaces with netlink
// and announces the move with gratuitous ARP, as MetalLB does.
// A lease (lease.go) makes the kernel fence an address the plane stops renewing.
package arp
