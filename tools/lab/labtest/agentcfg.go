package labtest

import (
	"context"
	"os"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/escape-mtd/escape/internal/atomicfile"
	"github.com/escape-mtd/escape/tools/lab"
)

// AgentSettings changes host's agent settings for the rest of the test, as
// an operator would: it edits the agent: section of the host's
// /etc/escape/escape.yaml with change and restarts the agent on it. At
// cleanup the file as it was comes back and the agent is restarted on it
// again, so that the tests after this one find the lab's agent.
func AgentSettings(t *testing.T, inv *lab.Inventory, host string, change func(agent map[string]any)) {
	t.Helper()
	h, ok := inv.Host(host)
	if !ok {
		t.Fatalf("no host %s in the lab", host)
	}
	orig, err := os.ReadFile(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string]any
	if err := yaml.Unmarshal(orig, &doc); err != nil || doc["agent"] == nil {
		t.Fatalf("the agent configuration of %s: %v (agent section: %v)", host, err, doc["agent"] != nil)
	}
	change(doc["agent"])
	data, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	restart := func(data []byte) error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := lab.StopAgent(ctx, inv, host); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(h.Config, data, 0o644); err != nil {
			return err
		}
		return lab.StartAgent(ctx, inv, host, nil)
	}
	t.Cleanup(func() {
		if err := restart(orig); err != nil {
			t.Errorf("restore the agent of %s: %v", host, err)
		}
	})
	if err := restart(data); err != nil {
		t.Fatalf("restart the agent of %s on new settings: %v", host, err)
	}
}
