// Package deploy holds ESCAPE's packaging: the example configuration
// escape.yaml, systemd units (systemd/) and Kubernetes manifests
// (kubernetes/). It has no code; its tests load escape.yaml through the
// daemons' own parsers (the sensor's and the agent's sections are tested
// next to the sensor, in cmd/escape-sensor/deploy_config_test.go).
package deploy
