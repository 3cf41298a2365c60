package kube

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/escape-mtd/escape/plane"
	"github.com/escape-mtd/escape/sensor/events"
)

// ReportingController names the plane in the Events it records.
const ReportingController = "escape.mtd/plane"

// queueSize bounds the Events waiting to be posted: past it, and past the
// rate limit, an Event is dropped and counted, never queued.
const queueSize = 64

// Recorder makes Kubernetes Events (events.k8s.io/v1) of the plane's
// decisions on a pod's containers.
type Recorder struct {
	cs       kubernetes.Interface
	instance string
	limit    *rate.Limiter
	queue    chan *eventsv1.Event
	pods     atomic.Pointer[func(string) (events.Pod, bool)]
	log      *zap.Logger
	dropped  atomic.Uint64
	posted   atomic.Uint64
	wg       sync.WaitGroup
}

// RecorderOption tunes a Recorder.
type RecorderOption func(*Recorder)

// WithRate bounds the Events to perSecond, with bursts of burst
// (defaults 1 and 10).
func WithRate(perSecond float64, burst int) RecorderOption {
	return func(r *Recorder) { r.limit = rate.NewLimiter(rate.Limit(perSecond), burst) }
}

// WithRecorderLogger sets the logger.
func WithRecorderLogger(l *zap.Logger) RecorderOption { return func(r *Recorder) { r.log = l } }

// NewRecorder records as instance (this replica's identity). Give Sink to
// plane.WithEventSink, then Attach the plane, then Run.
func NewRecorder(cs kubernetes.Interface, instance string, opts ...RecorderOption) *Recorder {
	r := &Recorder{cs: cs, instance: instance, limit: rate.NewLimiter(1, 10), queue: make(chan *eventsv1.Event, queueSize), log: zap.NewNop()}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Attach tells the recorder which pod a container is in (plane.PodOf).
func (r *Recorder) Attach(podOf func(id string) (events.Pod, bool)) { r.pods.Store(&podOf) }

// Dropped and Posted count the Events dropped (over the rate, the queue
// full, or refused by the API) and those posted.
func (r *Recorder) Dropped() uint64 { return r.dropped.Load() }

// Posted counts the Events the API accepted.
func (r *Recorder) Posted() uint64 { return r.posted.Load() }

// Sink is the plane's audit sink: it never blocks.
func (r *Recorder) Sink(ev plane.AuditEvent) {
	reason, warning, ok := EventReason(ev)
	if !ok || ev.Container == "" {
		return
	}
	podOf := r.pods.Load()
	if podOf == nil {
		return
	}
	pod, ok := (*podOf)(ev.Container)
	if !ok {
		return
	}
	if !r.limit.Allow() {
		r.dropped.Add(1)
		return
	}
	e := NewEvent(ev, pod, reason, warning, r.instance)
	select {
	case r.queue <- e:
	default:
		r.dropped.Add(1)
	}
}

// Run posts the queued Events until ctx ends.
func (r *Recorder) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-r.queue:
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := r.cs.EventsV1().Events(e.Namespace).Create(pctx, e, metav1.CreateOptions{})
			cancel()
			if err != nil {
				r.dropped.Add(1)
				r.log.Warn("post event", zap.String("pod", e.Regarding.Namespace+"/"+e.Regarding.Name), zap.String("reason", e.Reason), zap.Error(err))
				continue
			}
			r.posted.Add(1)
		}
	}
}

// refusedOutcome is the outcome of an action the plane refused.
const refusedOutcome = "refused"

// eventActions are the actions on a container worth an Event.
var eventActions = map[string]bool{"rollback": true, "migrate": true, "replicate": true, "restart": true,
	"adopt": true, "release": true, "remove": true}

// EventReason says whether an audit event is worth a Kubernetes Event:
// a decision to act (rollback, migrate, replace, alert), a refusal, or an
// action on a container; and its reason (CamelCase, as Kubernetes
// writes them) and type.
func EventReason(ev plane.AuditEvent) (reason string, warning, ok bool) {
	switch {
	case ev.Outcome == refusedOutcome || ev.Decision == "refuse":
		return "Refused" + camel(ev.Action), true, true
	case ev.Kind == "decision" && ev.Decision != "" && ev.Decision != "none" && ev.Decision != "skip":
		return "Decided" + camel(ev.Decision), true, true
	case ev.Kind == "action" && eventActions[ev.Action]:
		return camel(ev.Action) + outcomeWord(ev.Outcome), ev.Outcome != "ok", true
	}
	return "", false, false
}

func outcomeWord(outcome string) string {
	switch outcome {
	case "ok":
		return "Done"
	case "":
		return ""
	}
	return camel(outcome)
}

// camel turns "settle-migration" into "SettleMigration", and drops what
// an Event's reason may not hold.
func camel(s string) string {
	var b strings.Builder
	up := true
	for _, c := range s {
		switch {
		case c < unicode.MaxASCII && (unicode.IsLetter(c) || unicode.IsDigit(c)):
			if up {
				c = unicode.ToUpper(c)
			}
			b.WriteRune(c)
			up = false
		default:
			up = true
		}
	}
	return b.String()
}

// maxNote is the Kubernetes limit on an Event's note.
const maxNote = 1024

// NewEvent is the Kubernetes Event of an audit event on pod.
func NewEvent(ev plane.AuditEvent, pod events.Pod, reason string, warning bool, instance string) *eventsv1.Event {
	typ := corev1.EventTypeNormal
	if warning {
		typ = corev1.EventTypeWarning
	}
	note := fmt.Sprintf("container %s", ev.Container)
	if ev.Host != "" {
		note += " on " + ev.Host
	}
	if ev.Outcome != "" {
		note += ": " + ev.Outcome
	}
	if len(ev.Reasons) > 0 {
		note += ": " + strings.Join(ev.Reasons, "; ")
	}
	if ev.Error != "" {
		note += " (error: " + ev.Error + ")"
	}
	if len(note) > maxNote {
		note = note[:maxNote-3] + "..."
	}
	action := camel(ev.Action)
	if action == "" {
		action = camel(ev.Decision)
	}
	if action == "" {
		action = "Decide"
	}
	now := time.Now()
	if !ev.Time.IsZero() {
		now = ev.Time
	}
	// The API names it: <pod>.escape-<random>, within 253 characters.
	prefix := pod.Name
	if len(prefix) > 200 {
		prefix = prefix[:200]
	}
	return &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: strings.TrimRight(prefix, ".-") + ".escape-", Namespace: pod.Namespace},
		EventTime:  metav1.NewMicroTime(now), ReportingController: ReportingController, ReportingInstance: instance,
		Action: action, Reason: reason, Type: typ, Note: note,
		Regarding: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: types.UID(pod.UID)},
	}
}
