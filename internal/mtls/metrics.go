package mtls

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	refusals     *prometheus.CounterVec
	reloadErrors prometheus.Counter
	notAfter     *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &metrics{
		refusals: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "escape_tls_refusals_total",
			Help: "TLS handshakes that failed and peers refused, by the side that saw it and why.",
		}, []string{"side", "reason"})),
		reloadErrors: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "escape_tls_reload_errors_total",
			Help: "Reloads of changed certificate, key or CA files that failed; the last good material stays in use.",
		})),
		notAfter: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "escape_tls_certificate_not_after_timestamp_seconds",
			Help: "When the certificate in use expires (Unix seconds), by identity: alert on it to catch a rotation that did not happen.",
		}, []string{"identity"})),
	}
	// Every series exists from the start, so a rate() over a refusal that
	// never happened before is 0, not absent.
	for _, side := range []string{sideServer, sideClient} {
		for _, r := range Reasons() {
			m.refusals.WithLabelValues(side, string(r))
		}
	}
	return m
}

// register registers c, or finds the collector already registered under
// its name (two Sources sharing one registry share the counters).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		// A name taken by a collector of another shape is a programming
		// error of the process that builds the registry.
		panic("mtls: register metrics: " + err.Error())
	}
	return c
}
