package plane

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the plane's Prometheus metrics. Counters follow the audit
// log (every decision and action is audited, so the two cannot disagree);
// gauges are read from the store at scrape time.
type Metrics struct {
	p *Plane

	decisions *prometheus.CounterVec
	actions   *prometheus.CounterVec
	durations *prometheus.HistogramVec
	reports   *prometheus.CounterVec
	refused   prometheus.Counter

	containers *prometheus.Desc
	compromise *prometheus.Desc
	checkpts   *prometheus.Desc
	queue      *prometheus.Desc
	queueBytes *prometheus.Desc
	// feedLost counts events an agent's outbox lost before the plane had
	// them; feedRefused events refused on a host's link (garbage, or
	// naming another host).
	feedLost    *prometheus.CounterVec
	feedRefused *prometheus.CounterVec
}

// metricsOnce lets the plane count before anyone scrapes: NewMetrics
// returns the same Metrics for one plane.
type metricsOnce struct {
	once sync.Once
	m    *Metrics
}

// NewMetrics returns the plane's metrics, to register once.
func NewMetrics(p *Plane) *Metrics {
	p.metrics.once.Do(func() { p.metrics.m = newMetrics(p) })
	return p.metrics.m
}

func newMetrics(p *Plane) *Metrics {
	const ns = "escape_plane"
	return &Metrics{
		p: p,
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "decisions_total",
			Help: "Decisions on anomalies, by action (none, rollback, migrate, restart, replicate) and outcome."},
			[]string{"action", "outcome"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "actions_total",
			Help: "Actions carried out (checkpoint, rollback, migrate, ...), by outcome."}, []string{"action", "outcome"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "action_duration_seconds",
			Help:    "Duration of actions; for migrate, the time the container was frozen.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2, 4, 8, 16, 32, 64}}, []string{"action"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "reports_total",
			Help: "Sensor epoch reports, by verdict (clean, anomalous, degraded, learning) or ignored."}, []string{"verdict"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "auth_refused_total",
			Help: "API requests refused because the peer was not allowed."}),
		containers: prometheus.NewDesc(ns+"_containers", "Protected containers, by host.", []string{"host"}, nil),
		compromise: prometheus.NewDesc(ns+"_host_compromised", "1 if the host is flagged compromised or draining.",
			[]string{"host"}, nil),
		checkpts:   prometheus.NewDesc(ns+"_checkpoints", "Verified safe checkpoints kept, by container.", []string{"container"}, nil),
		queue:      prometheus.NewDesc(ns+"_feed_queue_length", "Sensor events waiting to be handled.", nil, nil),
		queueBytes: prometheus.NewDesc(ns+"_feed_queue_bytes", "Bytes of the sensor events waiting to be handled.", nil, nil),
		feedLost: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "feed_lost_events_total",
			Help: "Sensor events an agent lost before the plane had them (its bounded outbox), by host."}, []string{"host"}),
		feedRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "feed_refused_events_total",
			Help: "Sensor events refused on a host's link, by host and reason."}, []string{"host", "reason"}),
	}
}

// observe counts one audit event.
func (m *Metrics) observe(ev AuditEvent) {
	switch ev.Kind {
	case "decision":
		m.decisions.WithLabelValues(ev.Decision, ev.Outcome).Inc()
	case "action":
		m.actions.WithLabelValues(ev.Action, ev.Outcome).Inc()
		if ev.Outcome == "ok" && ev.Duration > 0 {
			m.durations.WithLabelValues(ev.Action).Observe(ev.Duration / 1000)
		}
	case "report":
		m.reports.WithLabelValues(verdictOf(ev)).Inc()
	case "auth":
		if ev.Outcome == "refused" {
			m.refused.Inc()
		}
	}
}

func verdictOf(ev AuditEvent) string {
	if ev.Outcome == "ignored" {
		return "ignored"
	}
	for _, k := range []string{"anomalous", "degraded", "learning"} {
		if b, _ := ev.Details[k].(bool); b {
			return k
		}
	}
	return "clean"
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.decisions.Describe(ch)
	m.actions.Describe(ch)
	m.durations.Describe(ch)
	m.reports.Describe(ch)
	m.refused.Describe(ch)
	ch <- m.containers
	ch <- m.compromise
	ch <- m.checkpts
	ch <- m.queue
	ch <- m.queueBytes
	m.feedLost.Describe(ch)
	m.feedRefused.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.decisions.Collect(ch)
	m.actions.Collect(ch)
	m.durations.Collect(ch)
	m.reports.Collect(ch)
	m.refused.Collect(ch)
	m.feedLost.Collect(ch)
	m.feedRefused.Collect(ch)
	perHost := map[string]int{}
	for _, h := range m.p.hosts.configs() {
		perHost[h.Name] = 0
		if hr, err := m.p.store.Host(h.Name); err == nil {
			v := 0.0
			if hr.Compromised || hr.Draining {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(m.compromise, prometheus.GaugeValue, v, h.Name)
		}
	}
	if cs, err := m.p.store.Containers(); err == nil {
		for _, c := range cs {
			perHost[c.Host]++
			if cks, err := m.p.store.Checkpoints(c.Spec.ID); err == nil {
				ch <- prometheus.MustNewConstMetric(m.checkpts, prometheus.GaugeValue, float64(len(cks)), c.Spec.ID)
			}
		}
	}
	for h, n := range perHost {
		ch <- prometheus.MustNewConstMetric(m.containers, prometheus.GaugeValue, float64(n), h)
	}
	n, bytes := m.p.feed.q.len()
	ch <- prometheus.MustNewConstMetric(m.queue, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(m.queueBytes, prometheus.GaugeValue, float64(bytes))
}
