// Package kubernetes holds ESCAPE's Kubernetes manifests (*.yaml, applied in
// file order). It has no code: its tests validate every manifest against the
// official Kubernetes OpenAPI v3 schemas in testdata/schemas, strictly
// (unknown fields are errors), and check the manifests against the daemons'
// own configuration parsers.
package kubernetes
