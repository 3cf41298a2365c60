package sensor

import (
	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics exports the monitor's per-container counters and the kernel's own
// run-time statistics of the BPF programs (kernel.bpf_stats_enabled must be
// on; the daemon turns it on with ebpf.EnableStats).
type Metrics struct {
	m     *Monitor
	progs map[string]*ebpf.Program

	calls, epochs, windows, mismatches, anomalies, degraded, drops, lost *prometheus.Desc
	dbBags, watched, runTime, runCount, dict, collisions                 *prometheus.Desc
	intervened, intervenedAnomalies, ignoredLabels                       *prometheus.Desc
	taught, voided, cooling, overflow, limited, quarantined              *prometheus.Desc
}

// NewMetrics returns a collector; progs names the programs to report.
func NewMetrics(m *Monitor, progs map[string]*ebpf.Program) *Metrics {
	lbl := []string{"identity", "host", "namespace", "container"}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc("escape_sensor_"+name, help, labels, nil)
	}
	return &Metrics{m: m, progs: progs,
		calls:      d("syscalls_total", "System calls of the container seen by the sensor.", lbl),
		epochs:     d("epochs_total", "Epochs closed.", lbl),
		windows:    d("windows_total", "Windows (bags) closed.", lbl),
		mismatches: d("mismatches_total", "Windows whose bag is not in the profile (detection).", lbl),
		anomalies:  d("anomalous_epochs_total", "Epochs whose mismatches exceeded the threshold.", lbl),
		degraded:   d("degraded_epochs_total", "Epochs that lost data (drops, lost epochs, unknown bags).", lbl),
		drops:      d("drops_total", "Ring-buffer outputs the kernel could not make.", lbl),
		lost:       d("lost_epochs_total", "Epochs that never reached userspace.", lbl),
		intervened: d("intervention_epochs_total", "Epochs marked as overlapping ESCAPE's own checkpoint, restore or restart of the container.", lbl),
		intervenedAnomalies: d("intervention_anomalies_total",
			"Marked epochs whose mismatches exceeded the threshold (emitted as warnings; not in anomalous_epochs_total).", lbl),
		taught: d("online_taught_epochs_total", "Epochs online learning taught the profile after their quarantine.", lbl),
		voided: d("online_voided_epochs_total", "Epochs in online-learning quarantine dropped because an anomaly followed.", lbl),
		cooling: d("online_cooling_epochs_total",
			"Clean epochs refused by online learning for coming less than a quarantine after an anomaly.", lbl),
		overflow: d("online_overflow_epochs_total",
			"Epochs pushed out of a full online-learning quarantine (a flood), never taught.", lbl),
		limited:     d("online_limited_epochs_total", "Clean epochs refused by the online-learning rate limit.", lbl),
		quarantined: d("online_quarantined_epochs", "Epochs waiting in online-learning quarantine.", lbl),
		dbBags:      d("profile_bags", "Distinct bags in the container's profile.", lbl),
		watched:     d("watched_containers", "Cgroups watched in the kernel.", nil),
		runTime:     d("bpf_run_time_seconds_total", "Kernel-measured run time of the BPF program.", []string{"program"}),
		runCount:    d("bpf_run_count_total", "Kernel-measured runs of the BPF program.", []string{"program"}),
		dict:        d("bag_dictionary", "Distinct bags the sensor learned from the kernel (all containers).", nil),
		collisions:  d("hash_collisions_total", "Bag hashes seen with two different bags.", nil),
		ignoredLabels: d("identity_labels_ignored_total",
			"Containers watched whose escape.identity label was ignored: outside the agent's own containerd namespace, a label may not name an identity.", nil),
	}
}

// Describe implements prometheus.Collector.
func (x *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{x.calls, x.epochs, x.windows, x.mismatches, x.anomalies, x.degraded,
		x.drops, x.lost, x.dbBags, x.watched, x.runTime, x.runCount, x.dict, x.collisions, x.intervened,
		x.intervenedAnomalies, x.ignoredLabels, x.taught, x.voided, x.cooling, x.overflow, x.limited, x.quarantined} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (x *Metrics) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	for _, r := range x.m.Rows() {
		l := []string{r.Identity, r.Host, r.Namespace, r.ID}
		s := r.Stats
		counter(x.calls, float64(s.Calls), l...)
		counter(x.epochs, float64(s.Epochs), l...)
		counter(x.windows, float64(s.Windows), l...)
		counter(x.mismatches, float64(s.Mismatches), l...)
		counter(x.anomalies, float64(s.Anomalies), l...)
		counter(x.degraded, float64(s.Degraded), l...)
		counter(x.drops, float64(s.Drops), l...)
		counter(x.lost, float64(s.LostEpochs), l...)
		counter(x.intervened, float64(s.Intervened), l...)
		counter(x.intervenedAnomalies, float64(s.IntervenedAnomalies), l...)
		ch <- prometheus.MustNewConstMetric(x.dbBags, prometheus.GaugeValue, float64(r.Database), l...)
		if r.Online {
			g := r.Guard
			counter(x.taught, float64(g.Taught), l...)
			counter(x.voided, float64(g.Voided), l...)
			counter(x.cooling, float64(g.Cooling), l...)
			counter(x.overflow, float64(g.Overflow), l...)
			counter(x.limited, float64(g.Limited), l...)
			ch <- prometheus.MustNewConstMetric(x.quarantined, prometheus.GaugeValue, float64(g.Quarantined), l...)
		}
	}
	ch <- prometheus.MustNewConstMetric(x.watched, prometheus.GaugeValue, float64(x.m.probe.Watched()))
	dict, coll := x.m.DictStats()
	ch <- prometheus.MustNewConstMetric(x.dict, prometheus.GaugeValue, float64(dict))
	counter(x.collisions, float64(coll))
	counter(x.ignoredLabels, float64(x.m.IgnoredIdentityLabels()))
	for name, p := range x.progs {
		st, err := p.Stats()
		if err != nil {
			continue
		}
		counter(x.runTime, st.Runtime.Seconds(), name)
		counter(x.runCount, float64(st.RunCount), name)
	}
}
