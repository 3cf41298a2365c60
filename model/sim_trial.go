package model

// workerStats are one worker's tallies; only integers, so summing them in
// any order gives the same result.
type workerStats struct {
	deaths     []int64 // deaths[s]: trials whose prey died at step s
	hostSteps  int64
	moves      int64
	migrations int64
}

// workerState is one goroutine's scratch space, allocated once so that a
// trial, and every step in it, allocates nothing.
type workerState struct {
	w        *world
	r        rng
	pos      []int32  // predator hosts
	exploit  []int32  // kernel each predator's exploit targets
	was      []bool   // predator threatened the prey's host last step
	zone     []uint64 // bitset: prey host (and its neighbours if exposed)
	flagged  []uint64 // bitset: hosts the plane flagged as compromised
	nflagged int
	mass     []float64 // anomaly mass per host at step last[h]
	last     []int32
	pressure []float64
	prey     int
	stats    workerStats
}

func newWorkerState(w *world) *workerState {
	words := (w.v + 63) / 64
	return &workerState{
		w: w, pos: make([]int32, 0, w.maxPred), exploit: make([]int32, 0, w.maxPred),
		was: make([]bool, w.maxPred), zone: make([]uint64, words), flagged: make([]uint64, words),
		mass: make([]float64, w.v), last: make([]int32, w.v), pressure: make([]float64, w.v),
		stats: workerStats{deaths: make([]int64, w.steps+1)},
	}
}

func has(b []uint64, i int32) bool { return b[i>>6]>>(uint(i)&63)&1 != 0 }
func set(b []uint64, i int32)      { b[i>>6] |= 1 << (uint(i) & 63) }

// setZone marks the hosts from which a predator threatens the prey.
func (st *workerState) setZone() {
	clear(st.zone)
	set(st.zone, int32(st.prey))
	if st.w.cfg.exposeNbrs {
		for _, n := range st.w.g.neighbours(st.prey) {
			set(st.zone, n)
		}
	}
}

// runTrial plays one game to the horizon or the prey's death.
func (st *workerState) runTrial(trial int) {
	w := st.w
	st.r = trialRNG(w.cfg.seed, trial)
	r := &st.r
	// One uniform per trial rounds N(t) to whole predators: floor(N(t)+u)
	// has mean N(t) and never shrinks while N(t) grows.
	u := r.float()
	st.prey = r.intn(w.v)
	st.pos, st.exploit = st.pos[:0], st.exploit[:0]
	clear(st.flagged)
	st.nflagged = 0
	if w.cfg.policy == PolicyGuided {
		clear(st.mass)
		clear(st.last)
	}
	st.setZone()
	for range min(int(w.nAt[0]+u), w.maxPred) {
		// Hacked hosts start anywhere but on the prey (S(0) = 0).
		h := r.intn(w.v - 1)
		if h >= st.prey {
			h++
		}
		st.addPredator(int32(h), w.kernel[h])
	}
	nbr, off := w.g.nbr, w.g.off
	for s := 1; s <= w.steps; s++ {
		st.resize(min(int(w.nAt[s]+u), w.maxPred))
		pos := st.pos
		for i, p := range pos {
			deg := uint64(off[p+1] - off[p])
			pos[i] = nbr[off[p]+int32((uint64(uint32(r.next()))*deg)>>32)]
		}
		st.stats.moves += int64(len(pos))
		st.stats.hostSteps += int64(w.v)
		if w.cfg.policy == PolicyGuided && w.cfg.anomalyRate > 0 {
			st.report(s)
		}
		if w.cfg.migrateEvery > 0 && s%w.cfg.migrateEvery == 0 {
			st.migrate(s)
		}
		dead, detectedAt := st.attack()
		if dead {
			st.stats.deaths[s]++
			return
		}
		if detectedAt >= 0 && w.cfg.migrateOnDet {
			if !has(st.flagged, detectedAt) {
				set(st.flagged, detectedAt)
				st.nflagged++
			}
			st.migrate(s)
		}
	}
}

// attack checks every predator newly threatening the prey: each arrival
// is one attack that succeeds with f (equation 3's fraction), else it is
// detected. It returns whether the prey died and a detecting host or -1.
func (st *workerState) attack() (dead bool, detectedAt int32) {
	w := st.w
	detectedAt = -1
	preyKernel := w.kernel[st.prey]
	for i, p := range st.pos {
		in := has(st.zone, p)
		if in && !st.was[i] {
			f := w.fDiff
			if st.exploit[i] == preyKernel {
				f = w.fSame
			}
			if st.r.float() < f {
				return true, -1
			}
			detectedAt = p
		}
		st.was[i] = in
	}
	return false, detectedAt
}

func (st *workerState) addPredator(h, exploit int32) {
	st.was[len(st.pos)] = false
	st.pos = append(st.pos, h)
	st.exploit = append(st.exploit, exploit)
}

// resize grows the hacked set by spreading to a neighbour of a random
// hacked host (the attack spreads), or shrinks it from the end.
func (st *workerState) resize(m int) {
	for len(st.pos) < m {
		var h, e int32
		if len(st.pos) == 0 {
			h = int32(st.r.intn(st.w.v))
			e = st.w.kernel[h]
		} else {
			j := st.r.intn(len(st.pos))
			nb := st.w.g.neighbours(int(st.pos[j]))
			h, e = nb[st.r.intn(len(nb))], st.exploit[j]
		}
		st.addPredator(h, e)
	}
	st.pos, st.exploit = st.pos[:m], st.exploit[:m]
}

// report files anomaly reports from hosts holding predators; the mass
// decays lazily (mass·decay^(s−last)) so a step costs O(predators).
func (st *workerState) report(s int) {
	for _, p := range st.pos {
		if st.r.float() < st.w.cfg.anomalyRate {
			st.mass[p] = st.decayed(p, s) + 1
			st.last[p] = int32(s)
		}
	}
}

func (st *workerState) decayed(h int32, s int) float64 {
	if st.mass[h] == 0 {
		return 0
	}
	return st.mass[h] * pow(st.w.decay, s-int(st.last[h]))
}

func pow(x float64, n int) float64 {
	y := 1.0
	for ; n > 0; n >>= 1 {
		if n&1 == 1 {
			y *= x
		}
		x *= x
	}
	return y
}
