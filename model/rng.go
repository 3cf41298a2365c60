package model

import "math/bits"

// rng is wyrand: one 64-bit add and one 128-bit multiply per draw. It is a
// concrete type (no interface call) so the simulator's inner loop inlines
// it; math/rand/v2's Rand goes through an interface per draw.
type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0xa0761d6478bd642f
	hi, lo := bits.Mul64(r.s, r.s^0xe7037ed1a0b428db)
	return hi ^ lo
}

// intn returns a uniform int in [0, n) by Lemire's multiply-shift, which
// has a bias below n/2^32 — negligible for the host counts simulated here.
func (r *rng) intn(n int) int {
	return int((uint64(uint32(r.next())) * uint64(n)) >> 32)
}

// float returns a uniform float64 in [0, 1).
func (r *rng) float() float64 {
	return float64(r.next()>>11) * (1.0 / (1 << 53))
}

// splitmix64 derives independent seeds: trial i of a run seeded s always
// gets the same stream, whichever worker runs it.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func trialRNG(seed uint64, trial int) rng {
	return rng{s: splitmix64(seed ^ splitmix64(uint64(trial)+0x632be59bd9b4e019))}
}
