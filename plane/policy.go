package plane

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Class says whether a container keeps state that must survive a response.
type Class string

const (
	Stateful  Class = "stateful"
	Stateless Class = "stateless"
)

// StatelessAction is what happens to a stateless container on an anomaly.
type StatelessAction string

const (
	Restart   StatelessAction = "restart"   // restart in place from its image
	Replicate StatelessAction = "replicate" // fresh copy elsewhere, traffic switched to it
)

// Policy is the per-container response policy.
type Policy struct {
	Class Class `json:"class"`
	// CheckpointInterval is how often a safe checkpoint is attempted.
	CheckpointInterval time.Duration `json:"checkpoint_interval_ns"`
	// Retain is how many verified checkpoints are kept (the last K).
	Retain int `json:"retain"`
	// CleanEpochs is how many consecutive clean epochs must precede a
	// checkpoint for it to count as safe.
	CleanEpochs int `json:"clean_epochs"`
	// RollbackLimit is N: after N rollbacks within RollbackWindow, the
	// next anomaly escalates to live migration.
	RollbackLimit  int             `json:"rollback_limit"`
	RollbackWindow time.Duration   `json:"rollback_window_ns"`
	Stateless      StatelessAction `json:"stateless_action"`
	// RestoreSettle is how long a copy the plane restored or restarted is
	// settling: its old connections reset and its memory is freed, calls the
	// workload makes but in a mix training never saw. In that time an
	// anomaly made only of known calls is recorded and set aside; one with a
	// novel call (the sensor's evidence) is acted on at once. 0 turns it off.
	RestoreSettle time.Duration `json:"restore_settle_ns"`
}

// DefaultPolicy is used for anything a config or label does not set.
func DefaultPolicy() Policy {
	return Policy{
		Class:              Stateful,
		CheckpointInterval: 30 * time.Second,
		Retain:             3,
		CleanEpochs:        3,
		RollbackLimit:      3,
		RollbackWindow:     10 * time.Minute,
		Stateless:          Restart,
		RestoreSettle:      5 * time.Second,
	}
}

// Validate rejects out-of-range values, naming the key.
func (p Policy) Validate() error {
	var errs []error
	if p.Class != Stateful && p.Class != Stateless {
		errs = append(errs, fmt.Errorf("class: %q is not stateful or stateless", p.Class))
	}
	if p.CheckpointInterval < time.Second || p.CheckpointInterval > 24*time.Hour {
		errs = append(errs, fmt.Errorf("checkpoint_interval: %v is outside 1s..24h", p.CheckpointInterval))
	}
	if p.Retain < 1 || p.Retain > 100 {
		errs = append(errs, fmt.Errorf("retain: %d is outside 1..100", p.Retain))
	}
	if p.CleanEpochs < 1 || p.CleanEpochs > 10000 {
		errs = append(errs, fmt.Errorf("clean_epochs: %d is outside 1..10000", p.CleanEpochs))
	}
	if p.RollbackLimit < 0 || p.RollbackLimit > 1000 {
		errs = append(errs, fmt.Errorf("rollback_limit: %d is outside 0..1000", p.RollbackLimit))
	}
	if p.RollbackWindow < time.Second || p.RollbackWindow > 30*24*time.Hour {
		errs = append(errs, fmt.Errorf("rollback_window: %v is outside 1s..720h", p.RollbackWindow))
	}
	if p.Stateless != Restart && p.Stateless != Replicate {
		errs = append(errs, fmt.Errorf("stateless_action: %q is not restart or replicate", p.Stateless))
	}
	if p.RestoreSettle < 0 || p.RestoreSettle > 5*time.Minute {
		errs = append(errs, fmt.Errorf("restore_settle: %v is outside 0..5m", p.RestoreSettle))
	}
	return errors.Join(errs...)
}

// PolicyOverrides are the policy keys a config entry may set; nil means
// "inherit".
type PolicyOverrides struct {
	Class              *Class           `yaml:"class" json:"class,omitempty"`
	CheckpointInterval *Duration        `yaml:"checkpoint_interval" json:"checkpoint_interval,omitempty"`
	Retain             *int             `yaml:"retain" json:"retain,omitempty"`
	CleanEpochs        *int             `yaml:"clean_epochs" json:"clean_epochs,omitempty"`
	RollbackLimit      *int             `yaml:"rollback_limit" json:"rollback_limit,omitempty"`
	RollbackWindow     *Duration        `yaml:"rollback_window" json:"rollback_window,omitempty"`
	Stateless          *StatelessAction `yaml:"stateless_action" json:"stateless_action,omitempty"`
	RestoreSettle      *Duration        `yaml:"restore_settle" json:"restore_settle,omitempty"`
}

// Apply returns p with the overrides set.
func (o PolicyOverrides) Apply(p Policy) Policy {
	if o.Class != nil {
		p.Class = *o.Class
	}
	if o.CheckpointInterval != nil {
		p.CheckpointInterval = time.Duration(*o.CheckpointInterval)
	}
	if o.Retain != nil {
		p.Retain = *o.Retain
	}
	if o.CleanEpochs != nil {
		p.CleanEpochs = *o.CleanEpochs
	}
	if o.RollbackLimit != nil {
		p.RollbackLimit = *o.RollbackLimit
	}
	if o.RollbackWindow != nil {
		p.RollbackWindow = time.Duration(*o.RollbackWindow)
	}
	if o.Stateless != nil {
		p.Stateless = *o.Stateless
	}
	if o.RestoreSettle != nil {
		p.RestoreSettle = time.Duration(*o.RestoreSettle)
	}
	return p
}

// LabelPrefix marks container labels that carry policy.
const LabelPrefix = "escape.mtd/"

// Policy label keys (after LabelPrefix).
var labelKeys = map[string]string{
	"class":               "class",
	"checkpoint-interval": "checkpoint_interval",
	"retain":              "retain",
	"clean-epochs":        "clean_epochs",
	"rollback-limit":      "rollback_limit",
	"rollback-window":     "rollback_window",
	"stateless-action":    "stateless_action",
	"restore-settle":      "restore_settle",
}

// OverridesFromLabels reads policy from container labels with LabelPrefix.
// Other labels are ignored; an unknown key under the prefix, or a value
// that does not parse, is an error naming the label.
func OverridesFromLabels(labels map[string]string) (PolicyOverrides, error) {
	var o PolicyOverrides
	var errs []error
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !strings.HasPrefix(k, LabelPrefix) {
			continue
		}
		v := strings.TrimSpace(labels[k])
		short := strings.TrimPrefix(k, LabelPrefix)
		bad := func(err error) { errs = append(errs, fmt.Errorf("label %s=%q: %w", k, labels[k], err)) }
		switch short {
		case "class":
			c := Class(v)
			if c != Stateful && c != Stateless {
				bad(errors.New("want stateful or stateless"))
				continue
			}
			o.Class = &c
		case "checkpoint-interval", "rollback-window", "restore-settle":
			d, err := time.ParseDuration(v)
			if err != nil {
				bad(err)
				continue
			}
			dd := Duration(d)
			switch short {
			case "checkpoint-interval":
				o.CheckpointInterval = &dd
			case "rollback-window":
				o.RollbackWindow = &dd
			default:
				o.RestoreSettle = &dd
			}
		case "retain", "clean-epochs", "rollback-limit":
			n, err := strconv.Atoi(v)
			if err != nil {
				bad(errors.New("want an integer"))
				continue
			}
			switch short {
			case "retain":
				o.Retain = &n
			case "clean-epochs":
				o.CleanEpochs = &n
			default:
				o.RollbackLimit = &n
			}
		case "stateless-action":
			a := StatelessAction(v)
			if a != Restart && a != Replicate {
				bad(errors.New("want restart or replicate"))
				continue
			}
			o.Stateless = &a
		default:
			known := make([]string, 0, len(labelKeys))
			for k := range labelKeys {
				known = append(known, LabelPrefix+k)
			}
			sort.Strings(known)
			errs = append(errs, fmt.Errorf("label %s: unknown policy key (known: %s)", k, strings.Join(known, ", ")))
		}
	}
	return o, errors.Join(errs...)
}

// ResolvePolicy layers defaults, config overrides and labels (labels win)
// and validates the result.
func ResolvePolicy(defaults Policy, cfg PolicyOverrides, labels map[string]string) (Policy, error) {
	lo, err := OverridesFromLabels(labels)
	if err != nil {
		return Policy{}, err
	}
	p := lo.Apply(cfg.Apply(defaults))
	if err := p.Validate(); err != nil {
		return Policy{}, fmt.Errorf("policy: %w", err)
	}
	return p, nil
}
