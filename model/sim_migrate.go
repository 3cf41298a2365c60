package model

// migrate moves the prey per the configured policy. All policies skip the
// current host and flagged hosts; with no eligible host the prey stays.
func (st *workerState) migrate(s int) {
	w := st.w
	dst := -1
	switch w.cfg.policy {
	case PolicyRandom:
		dst = st.randomDest()
	case PolicyHeterogeneous:
		best := float32(-1)
		row := w.het[st.prey*w.v : (st.prey+1)*w.v]
		for c, h := range row {
			if c != st.prey && !has(st.flagged, int32(c)) && h > best {
				best, dst = h, c
			}
		}
	case PolicyGuided:
		dst = st.guidedDest(s)
	}
	if dst < 0 {
		return
	}
	st.prey = dst
	st.stats.migrations++
	st.setZone()
	// Predators already next to the new host get a fresh attack chance.
	clear(st.was[:len(st.pos)])
}

func (st *workerState) randomDest() int {
	v := st.w.v
	if st.nflagged == 0 {
		c := st.r.intn(v - 1)
		if c >= st.prey {
			c++
		}
		return c
	}
	eligible := v - 1 - st.nflagged
	if has(st.flagged, int32(st.prey)) {
		eligible++
	}
	if eligible <= 0 {
		return -1
	}
	k := st.r.intn(eligible)
	for c := range v {
		if c == st.prey || has(st.flagged, int32(c)) {
			continue
		}
		if k == 0 {
			return c
		}
		k--
	}
	return -1
}

// guidedDest scores hosts with the same core as RankDestinations, with
// flagged hosts as compromised and the decayed anomaly mass as reports.
func (st *workerState) guidedDest(s int) int {
	w := st.w
	for h := range w.v {
		if has(st.flagged, int32(h)) {
			st.pressure[h] = 1
		} else {
			st.pressure[h] = pressureOf(st.decayed(int32(h), s))
		}
	}
	dst, best := -1, -1.0
	for c := range w.v {
		if c == st.prey || has(st.flagged, int32(c)) {
			continue
		}
		// Strict > keeps the lowest index, i.e. the lowest name, on ties.
		if sc, _, _ := w.sc.score(st.prey, c, st.pressure); sc > best {
			best, dst = sc, c
		}
	}
	return dst
}
