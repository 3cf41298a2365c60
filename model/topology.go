package model

import (
	"fmt"
	"math"
)

// Topology is the shape of the simulated host network.
type Topology int

const (
	// TopologyGrid lays hosts row-major on a ⌈√V⌉-wide 2-D grid (the
	// papers' "two-dimensional square area"); the last row may be partial
	// and edges reflect. Neighbours are the 4 orthogonal cells.
	TopologyGrid Topology = iota
	// TopologyTorus is the grid with wrap-around edges; it needs V = w·h
	// with w, h >= 3 so every host is equivalent (no boundary effects).
	TopologyTorus
	// TopologyComplete connects every host to every other (well mixed).
	TopologyComplete
)

func (t Topology) String() string {
	switch t {
	case TopologyGrid:
		return "grid"
	case TopologyTorus:
		return "torus"
	case TopologyComplete:
		return "complete"
	}
	return fmt.Sprintf("topology(%d)", int(t))
}

// graph is an adjacency list in compressed-sparse-row form: the neighbours
// of host h are nbr[off[h]:off[h+1]]. Flat int32 arrays keep the walk's
// inner loop free of pointer chasing.
type graph struct {
	v     int
	width int
	off   []int32
	nbr   []int32
}

func (g *graph) neighbours(h int) []int32 { return g.nbr[g.off[h]:g.off[h+1]] }

// buildGraph makes the host graph for v hosts.
func buildGraph(t Topology, v int) (*graph, error) {
	if v < 2 {
		return nil, fmt.Errorf("%w: simulator needs V >= 2 hosts, got %d", ErrInvalidParam, v)
	}
	if v > math.MaxInt32/8 {
		return nil, fmt.Errorf("%w: V=%d too large", ErrInvalidParam, v)
	}
	g := &graph{v: v, off: make([]int32, v+1)}
	var adj [][]int32
	switch t {
	case TopologyGrid:
		w := int(math.Ceil(math.Sqrt(float64(v))))
		g.width = w
		adj = make([][]int32, v)
		for h := 0; h < v; h++ {
			r, c := h/w, h%w
			for _, d := range [4][2]int{{-1, 0}, {1, 0}, {0, -1}, {0, 1}} {
				rr, cc := r+d[0], c+d[1]
				if rr < 0 || cc < 0 || cc >= w {
					continue
				}
				if n := rr*w + cc; n < v {
					adj[h] = append(adj[h], int32(n))
				}
			}
		}
	case TopologyTorus:
		w := int(math.Round(math.Sqrt(float64(v))))
		for w >= 3 && v%w != 0 {
			w--
		}
		if w < 3 || v/w < 3 {
			return nil, fmt.Errorf("%w: torus needs V = w*h with w, h >= 3, got V=%d", ErrInvalidParam, v)
		}
		g.width = w
		hgt := v / w
		adj = make([][]int32, v)
		for h := 0; h < v; h++ {
			r, c := h/w, h%w
			adj[h] = []int32{
				int32(((r+hgt-1)%hgt)*w + c), int32(((r+1)%hgt)*w + c),
				int32(r*w + (c+w-1)%w), int32(r*w + (c+1)%w),
			}
		}
	case TopologyComplete:
		g.width = v
		adj = make([][]int32, v)
		for h := 0; h < v; h++ {
			for n := 0; n < v; n++ {
				if n != h {
					adj[h] = append(adj[h], int32(n))
				}
			}
		}
	default:
		return nil, fmt.Errorf("%w: unknown topology %d", ErrInvalidParam, int(t))
	}
	for h := 0; h < v; h++ {
		g.off[h+1] = g.off[h] + int32(len(adj[h]))
		g.nbr = append(g.nbr, adj[h]...)
	}
	return g, nil
}
