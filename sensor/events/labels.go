package events

import (
	"fmt"
	"strings"
)

// DefaultWebhookLabels are the container label keys a webhook sends when
// it is configured with none: ESCAPE's own, the identity and the policy
// labels (escape.mtd/...). A container's other labels (an image's
// maintainer, a pod's labels, whatever its owner put there) stay on the
// host: a SIEM gets them only if they are named.
var DefaultWebhookLabels = []string{IdentityLabel, "escape.mtd/*"}

// LabelFilter keeps the container labels whose key it allows: an exact
// key, or a prefix ending in '*'. The zero LabelFilter allows none.
type LabelFilter struct {
	exact    map[string]bool
	prefixes []string
}

// NewLabelFilter checks the patterns: non-empty, '*' only last.
func NewLabelFilter(patterns []string) (LabelFilter, error) {
	f := LabelFilter{exact: map[string]bool{}}
	for _, p := range patterns {
		prefix, wild := strings.CutSuffix(p, "*")
		if p == "" || strings.Contains(prefix, "*") || strings.TrimSpace(p) != p {
			return LabelFilter{}, fmt.Errorf("label pattern %q: want a key, or a prefix followed by one '*' (escape.mtd/*)", p)
		}
		if wild {
			f.prefixes = append(f.prefixes, prefix)
		} else {
			f.exact[p] = true
		}
	}
	return f, nil
}

// Allows says whether key passes.
func (f LabelFilter) Allows(key string) bool {
	if f.exact[key] {
		return true
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// Apply returns e with its container's labels cut to those allowed. The
// event passed in is not changed (other sinks share its container).
func (f LabelFilter) Apply(e Event) Event {
	if e.Container == nil || len(e.Container.Labels) == 0 {
		return e
	}
	c := *e.Container
	c.Labels = nil
	for k, v := range e.Container.Labels {
		if f.Allows(k) {
			if c.Labels == nil {
				c.Labels = map[string]string{}
			}
			c.Labels[k] = v
		}
	}
	e.Container = &c
	return e
}
