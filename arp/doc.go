// Package arp moves an IP address between network namespaces with netlink
// and announces the move with gratuitous ARP, as MetalLB does.
package arp
