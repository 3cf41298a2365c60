package plane

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/escape-mtd/escape/migrate"
	"github.com/escape-mtd/escape/sensor/events"
)

// A sensor event reaches a protected container only by the containerd id
// the plane placed, on the host it placed it, with the identity it bound:
// no label, namespace or host of another container redirects it.
func TestSensorEventsMapOnlyToWhatThePlanePlaced(t *testing.T) {
	p, _ := offlinePlane(t)
	if err := p.store.PutContainer(ContainerRecord{Spec: migrate.Spec{ID: "db", Args: []string{"x"},
		Labels: map[string]string{events.IdentityLabel: "db"}}, Host: "h1", Policy: DefaultPolicy(), Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	protect(t, p, "cache") // a record with no identity label: the id alone binds it
	ctx := context.Background()
	now := time.Now()
	anomaly := func(c events.Container) events.Event {
		ev := sensorEvent(events.TypeAnomaly, "detecting", now)
		ev.Container = &c
		ev.Epoch.Mismatches = 40
		return ev
	}

	for name, tc := range map[string]struct {
		c    events.Container
		want error
	}{
		// An old sensor, or one that honours labels everywhere, names the
		// victim's identity for another container: the id decides.
		"label of another container": {events.Container{Identity: "db", ID: "web", Namespace: "default", Host: "h1"}, ErrNotFound},
		// The same id in another containerd namespace of the host: the
		// sensor does not honour its label there, so its identity is not
		// the one the plane bound.
		"same id, other namespace": {events.Container{Identity: "default/db", ID: "db", Namespace: "default", Host: "h1"}, ErrUnbound},
		"no containerd id":         {events.Container{Identity: "db", Namespace: "escape", Host: "h1"}, ErrNotFound},
	} {
		_, err := p.HandleSensorEvent(ctx, anomaly(tc.c), "test")
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	// The same id and identity from another host: set aside, never acted on.
	d, err := p.HandleSensorEvent(ctx, anomaly(events.Container{Identity: "db", ID: "db", Namespace: "escape", Host: "h2"}), "test")
	if err != nil || d.Action != "none" || !strings.Contains(d.Reasons[0], "from host h2") {
		t.Fatalf("other host: %+v %v", d, err)
	}
	if e, err := p.store.Epoch("db"); err != nil || e.LastAnomaly != 0 || e.LastEpoch != 0 {
		t.Fatalf("refused events touched the victim's record: %+v %v", e, err)
	}
	// The container the plane placed is acted on (no checkpoint yet: the
	// rollback fails, but it is the victim's decision).
	d, err = p.HandleSensorEvent(ctx, anomaly(events.Container{Identity: "db", ID: "db", Namespace: "escape", Host: "h1"}), "test")
	if err != nil || d.Container != "db" || d.Action != "rollback" {
		t.Fatalf("the placed container's anomaly: %+v %v", d, err)
	}
	// Without a bound identity the id and host are enough, whatever the
	// sensor's identity.
	d, err = p.HandleSensorEvent(ctx, anomaly(events.Container{Identity: "escape/cache", ID: "cache", Namespace: "escape", Host: "h1"}), "test")
	if err != nil || d.Container != "cache" || d.Action != "rollback" {
		t.Fatalf("unlabelled record: %+v %v", d, err)
	}
}

// An adopted container is bound to the namespace its agent found it in: a
// container of the same id in another namespace of its host is not it.
func TestSensorEventsMapAdoptedContainersByNamespace(t *testing.T) {
	p, _ := offlinePlane(t)
	if err := p.store.PutContainer(ContainerRecord{Spec: migrate.Spec{ID: "web",
		Adopted: &migrate.Adopted{Namespace: "default", Rollback: true}}, Host: "h1", Adopted: true,
		Policy: DefaultPolicy(), Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	ev := sensorEvent(events.TypeAnomaly, "detecting", time.Now())
	ev.Epoch.Mismatches = 40
	ev.Container = &events.Container{Identity: "other/web", ID: "web", Namespace: "other", Host: "h1"}
	if _, err := p.HandleSensorEvent(context.Background(), ev, "test"); !errors.Is(err, ErrUnbound) {
		t.Fatalf("same id in another namespace: %v, want ErrUnbound", err)
	}
	ev.Container = &events.Container{Identity: "default/web", ID: "web", Namespace: "default", Host: "h1"}
	d, err := p.HandleSensorEvent(context.Background(), ev, "test")
	if err != nil || d.Container != "web" || d.Action != "rollback" {
		t.Fatalf("the adopted container's anomaly: %+v %v", d, err)
	}
}
