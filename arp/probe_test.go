package arp

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

func TestSentryCatchesLateClaimAndWaitsItsMinimum(t *testing.T) {
	s := newSegment(t)
	vip := netip.MustParsePrefix("198.19.254.110/24")
	a := s.station("a", "")
	b := s.station("b", "")

	// Nobody holds the address: Stop waits out the minimum and reports it free.
	start := time.Now()
	sn, err := StartProbe(context.Background(), b, vip.Addr(), 120*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	mac, taken, err := sn.Stop()
	if err != nil || taken || mac != nil {
		t.Fatalf("free address: mac=%v taken=%v err=%v", mac, taken, err)
	}
	if el := time.Since(start); el < 120*time.Millisecond {
		t.Fatalf("Stop returned after %v, before the 120ms minimum", el)
	}

	// A station takes the address silently (no announcement) while the
	// sentry runs: the sentry's next probe asks, and it answers.
	sn, err = StartProbe(context.Background(), b, vip.Addr(), 40*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	if err := AddAddress(a, vip); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // more than two probe intervals
	mac, taken, err = sn.Stop()
	la, _ := Link(a)
	if err != nil || !taken || mac.String() != la.MAC.String() {
		t.Fatalf("late claim: mac=%v taken=%v err=%v, want %v", mac, taken, err, la.MAC)
	}

	// The rightful owner is ignored when asked to be.
	sn, err = StartProbe(context.Background(), b, vip.Addr(), 60*time.Millisecond, WithIgnore(la.MAC))
	if err != nil {
		t.Fatal(err)
	}
	if mac, taken, err := sn.Stop(); err != nil || taken {
		t.Fatalf("ignored owner: mac=%v taken=%v err=%v", mac, taken, err)
	}

	// A cancelled context is an error, never a clean result.
	ctx, cancel := context.WithCancel(context.Background())
	sn, err = StartProbe(ctx, b, netip.MustParseAddr("198.19.254.111"), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, taken, err := sn.Stop(); err == nil || taken {
		t.Fatalf("cancelled probe: taken=%v err=%v, want an error", taken, err)
	}
	// Stop twice is harmless and gives the same answer.
	if _, _, err2 := sn.Stop(); err2 == nil {
		t.Fatal("second Stop lost the error")
	}
}
