package kubernetes

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

// schemaDir holds the OpenAPI v3 documents of one Kubernetes release.
const schemaDir = "testdata/schemas"

// schemaFiles are the documents the manifests need (core/v1 and apps/v1).
var schemaFiles = []string{"api__v1_openapi.json", "apis__apps__v1_openapi.json"}

// object is one manifest document.
type object struct {
	File  string // base name of the manifest file
	Index int    // document index in the file
	Value map[string]any
}

func (o object) kind() string { s, _ := o.Value["kind"].(string); return s }

func (o object) name() string {
	if m, ok := o.Value["metadata"].(map[string]any); ok {
		s, _ := m["name"].(string)
		return s
	}
	return ""
}

func (o object) String() string {
	return fmt.Sprintf("%s[%d] %s/%s", o.File, o.Index, o.kind(), o.name())
}

// validator checks objects against the OpenAPI schemas of their
// apiVersion/kind, then strictly (no unknown fields), then against the few
// API server rules that the schemas do not express.
type validator struct {
	docs     map[string]map[string]any // file -> OpenAPI document
	byGVK    map[string]schemaRef      // "apps/v1/DaemonSet" -> schema
	compiler *jsonschema.Compiler
	compiled map[string]*jsonschema.Schema
}

type schemaRef struct{ file, name string }

func schemaURL(file string) string { return "file:///k8s-schemas/" + file }

func newValidator(t testing.TB) *validator {
	t.Helper()
	v := &validator{docs: map[string]map[string]any{}, byGVK: map[string]schemaRef{},
		compiler: jsonschema.NewCompiler(), compiled: map[string]*jsonschema.Schema{}}
	// OpenAPI 3.0 schema objects read as JSON Schema 2020-12: "format" is
	// an annotation (int32, int-or-string, byte are not JSON Schema
	// formats), x-kubernetes-* keywords are ignored by the validator and
	// honoured by the strict pass below, and IntOrString/Quantity are
	// oneOf [integer, string] in these documents.
	v.compiler.DefaultDraft(jsonschema.Draft2020)
	for _, f := range schemaFiles {
		fh, err := os.Open(filepath.Join(schemaDir, f))
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(fh)
		fh.Close()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		m, ok := doc.(map[string]any)
		if !ok {
			t.Fatalf("%s: not a JSON object", f)
		}
		v.docs[f] = m
		if err := v.compiler.AddResource(schemaURL(f), doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for name, s := range componentSchemas(m) {
			sm, _ := s.(map[string]any)
			gvks, _ := sm["x-kubernetes-group-version-kind"].([]any)
			for _, g := range gvks {
				gm, _ := g.(map[string]any)
				group, _ := gm["group"].(string)
				version, _ := gm["version"].(string)
				kind, _ := gm["kind"].(string)
				apiVersion := version
				if group != "" {
					apiVersion = group + "/" + version
				}
				if _, dup := v.byGVK[apiVersion+"/"+kind]; !dup {
					v.byGVK[apiVersion+"/"+kind] = schemaRef{f, name}
				}
			}
		}
	}
	return v
}

func componentSchemas(doc map[string]any) map[string]any {
	c, _ := doc["components"].(map[string]any)
	s, _ := c["schemas"].(map[string]any)
	return s
}

// validate returns every problem of o, each naming the field.
func (v *validator) validate(o object) []error {
	apiVersion, _ := o.Value["apiVersion"].(string)
	kind := o.kind()
	ref, ok := v.byGVK[apiVersion+"/"+kind]
	if !ok {
		return []error{fmt.Errorf("%s: apiVersion %q kind %q: no schema in %s", o, apiVersion, kind, schemaDir)}
	}
	loc := schemaURL(ref.file) + "#/components/schemas/" + ref.name
	sch, ok := v.compiled[loc]
	if !ok {
		var err error
		if sch, err = v.compiler.Compile(loc); err != nil {
			return []error{fmt.Errorf("compile %s: %w", loc, err)}
		}
		v.compiled[loc] = sch
	}
	var errs []error
	// The validator wants JSON values (json.Number for numbers).
	inst, err := jsonValue(o.Value)
	if err != nil {
		return []error{fmt.Errorf("%s: %w", o, err)}
	}
	if err := sch.Validate(inst); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			for _, leaf := range leaves(ve) {
				errs = append(errs, fmt.Errorf("%s: %s: %s", o, fieldPath(leaf.InstanceLocation), leafMessage(leaf)))
			}
		} else {
			errs = append(errs, fmt.Errorf("%s: %w", o, err))
		}
	}
	doc := v.docs[ref.file]
	errs = append(errs, v.strict(doc, o, inst, componentSchemas(doc)[ref.name], nil)...)
	errs = append(errs, serverRules(o)...)
	return errs
}

// leaves are the innermost causes: the ones that say what is wrong where.
func leaves(ve *jsonschema.ValidationError) []*jsonschema.ValidationError {
	if len(ve.Causes) == 0 {
		return []*jsonschema.ValidationError{ve}
	}
	var out []*jsonschema.ValidationError
	for _, c := range ve.Causes {
		out = append(out, leaves(c)...)
	}
	return out
}

// leafMessage is the validator's message for one innermost cause.
func leafMessage(ve *jsonschema.ValidationError) string {
	out := ve.BasicOutput()
	for _, u := range append([]jsonschema.OutputUnit{*out}, out.Errors...) {
		if u.Error != nil {
			return u.Error.String()
		}
	}
	return ve.Error()
}

// fieldPath writes a JSON pointer the way kubectl does: spec.template.spec.containers[0].image.
func fieldPath(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		if t != "" && strings.Trim(t, "0123456789") == "" {
			b.WriteString("[" + t + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(t)
	}
	if b.Len() == 0 {
		return "(root)"
	}
	return b.String()
}

// strict walks the instance along the schema's properties and reports every
// field the schema does not define. The Kubernetes OpenAPI documents never
// set additionalProperties: false, so the schema validator alone accepts a
// misspelt field (hostPid) that the API server would drop, or refuse under
// kubectl's field validation; kubeconform -strict does the same as this.
func (v *validator) strict(doc map[string]any, o object, inst any, schema any, path []string) []error {
	s := v.resolve(doc, schema)
	if s == nil {
		return nil
	}
	if b, _ := s["x-kubernetes-preserve-unknown-fields"].(bool); b {
		return nil
	}
	var errs []error
	switch val := inst.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		addl, hasAddl := s["additionalProperties"]
		if props == nil && !hasAddl {
			return nil // a free-form object (FieldsV1, RawExtension)
		}
		keys := make([]string, 0, len(val))
		for k := range val {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := append(slices.Clone(path), k)
			if ps, ok := props[k]; ok {
				errs = append(errs, v.strict(doc, o, val[k], ps, p)...)
				continue
			}
			switch a := addl.(type) {
			case map[string]any:
				errs = append(errs, v.strict(doc, o, val[k], a, p)...)
			case bool:
				if !a {
					errs = append(errs, unknownField(o, p, props))
				}
			default:
				errs = append(errs, unknownField(o, p, props))
			}
		}
	case []any:
		if items, ok := s["items"]; ok {
			for i, e := range val {
				errs = append(errs, v.strict(doc, o, e, items, append(slices.Clone(path), fmt.Sprint(i)))...)
			}
		}
	}
	return errs
}

func unknownField(o object, path []string, props map[string]any) error {
	name := path[len(path)-1]
	hint := ""
	for p := range props {
		if strings.EqualFold(p, name) {
			hint = fmt.Sprintf(" (did you mean %q?)", p)
		}
	}
	return fmt.Errorf("%s: %s: unknown field %q%s", o, fieldPath(path), name, hint)
}

// resolve follows $ref and merges allOf members (the documents wrap every
// $ref that has siblings in an allOf of one).
func (v *validator) resolve(doc map[string]any, schema any) map[string]any {
	s, _ := schema.(map[string]any)
	for range 64 {
		if s == nil {
			return nil
		}
		if ref, ok := s["$ref"].(string); ok {
			name, found := strings.CutPrefix(ref, "#/components/schemas/")
			if !found {
				return nil
			}
			s, _ = componentSchemas(doc)[name].(map[string]any)
			continue
		}
		all, ok := s["allOf"].([]any)
		if !ok {
			return s
		}
		merged := map[string]any{}
		for k, val := range s {
			if k != "allOf" {
				merged[k] = val
			}
		}
		props := map[string]any{}
		for _, member := range all {
			m := v.resolve(doc, member)
			for k, val := range m {
				if k == "properties" {
					for pk, pv := range val.(map[string]any) {
						props[pk] = pv
					}
					continue
				}
				if _, set := merged[k]; !set {
					merged[k] = val
				}
			}
		}
		if len(props) > 0 {
			merged["properties"] = props
		}
		return merged
	}
	return nil
}

// dns1123 is the API server's rule for object names (a DNS subdomain).
var dns1123 = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// serverRules are API server validations that the OpenAPI schemas do not
// express (k8s.io/kubernetes/pkg/apis/{core,apps}/validation), limited to
// the kinds and fields these manifests use.
func serverRules(o object) []error {
	var errs []error
	bad := func(path, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %s", o, path, fmt.Sprintf(format, a...)))
	}
	if n := o.name(); n == "" {
		bad("metadata.name", "Required value")
	} else if len(n) > 253 || !dns1123.MatchString(n) {
		bad("metadata.name", "%q is not a DNS-1123 subdomain", n)
	}
	if o.kind() != "Deployment" && o.kind() != "DaemonSet" {
		return errs
	}
	spec, _ := o.Value["spec"].(map[string]any)
	tmpl, _ := spec["template"].(map[string]any)
	tmeta, _ := tmpl["metadata"].(map[string]any)
	labels, _ := tmeta["labels"].(map[string]any)
	sel, _ := spec["selector"].(map[string]any)
	match, _ := sel["matchLabels"].(map[string]any)
	if len(match) == 0 {
		bad("spec.selector", "Required value: matchLabels")
	}
	for k, val := range match {
		if labels[k] != val {
			bad("spec.template.metadata.labels", "`selector` does not match template `labels` (%s=%v)", k, val)
		}
	}
	pod, _ := tmpl["spec"].(map[string]any)
	volumes := map[string]bool{}
	vols, _ := pod["volumes"].([]any)
	for _, vol := range vols {
		vm, _ := vol.(map[string]any)
		name, _ := vm["name"].(string)
		volumes[name] = true
	}
	for _, list := range []string{"initContainers", "containers"} {
		cs, _ := pod[list].([]any)
		for i, c := range cs {
			cm, _ := c.(map[string]any)
			at := fmt.Sprintf("spec.template.spec.%s[%d]", list, i)
			if img, _ := cm["image"].(string); strings.TrimSpace(img) == "" {
				bad(at+".image", "Required value")
			}
			sc, _ := cm["securityContext"].(map[string]any)
			privileged, _ := sc["privileged"].(bool)
			if ape, ok := sc["allowPrivilegeEscalation"].(bool); ok && !ape && privileged {
				bad(at+".securityContext", "cannot set `allowPrivilegeEscalation` to false and `privileged` to true")
			}
			mounts, _ := cm["volumeMounts"].([]any)
			for j, m := range mounts {
				mm, _ := m.(map[string]any)
				mat := fmt.Sprintf("%s.volumeMounts[%d]", at, j)
				if name, _ := mm["name"].(string); !volumes[name] {
					bad(mat+".name", "Not found: %q", name)
				}
				if mm["mountPropagation"] == "Bidirectional" && !privileged {
					bad(mat+".mountPropagation", "Bidirectional mount propagation is available only to privileged containers")
				}
			}
		}
	}
	return errs
}

// loadManifests reads every *.yaml file of dir, document by document.
func loadManifests(t testing.TB, dir string) []object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	var out []object
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := parseManifests(filepath.Base(f), data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, objs...)
	}
	return out
}

// parseManifests splits a YAML stream into objects, as kubectl does.
func parseManifests(file string, data []byte) ([]object, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []object
	for i := 0; ; i++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		v, err := nodeValue(&n, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		if v == nil {
			continue // an empty document
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: document %d: not a mapping", file, i)
		}
		out = append(out, object{File: file, Index: i, Value: m})
	}
}

// yaml11Ambiguous are plain scalars that YAML 1.2 (go.yaml.in/yaml/v3, this
// test) reads as strings but kubectl (sigs.k8s.io/yaml, YAML 1.1 rules)
// reads as booleans or octal numbers. Manifests must quote them, so both
// readers agree.
var yaml11Ambiguous = regexp.MustCompile(`^(y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF|[-+]?0[0-7]+)$`)

// nodeValue turns a YAML node into JSON-shaped values: string keys only,
// numbers as json.Number.
func nodeValue(n *yaml.Node, path []string) (any, error) {
	at := fieldPath(path)
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return nodeValue(n.Content[0], path)
	case yaml.AliasNode:
		return nodeValue(n.Alias, path)
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
				return nil, fmt.Errorf("line %d: %s: key %q is not a string", k.Line, at, k.Value)
			}
			if _, dup := m[k.Value]; dup {
				return nil, fmt.Errorf("line %d: %s: key %q already defined", k.Line, at, k.Value)
			}
			if k.Value == "<<" {
				return nil, fmt.Errorf("line %d: %s: merge keys are not supported", k.Line, at)
			}
			v, err := nodeValue(n.Content[i+1], append(slices.Clone(path), k.Value))
			if err != nil {
				return nil, err
			}
			m[k.Value] = v
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, 0, len(n.Content))
		for i, c := range n.Content {
			v, err := nodeValue(c, append(slices.Clone(path), fmt.Sprint(i)))
			if err != nil {
				return nil, err
			}
			s = append(s, v)
		}
		return s, nil
	case yaml.ScalarNode:
		if n.Style == 0 && yaml11Ambiguous.MatchString(n.Value) {
			return nil, fmt.Errorf("line %d: %s: plain %q reads differently in YAML 1.1 (kubectl): quote it", n.Line, at, n.Value)
		}
		switch n.ShortTag() {
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			err := n.Decode(&b)
			return b, err
		case "!!int", "!!float":
			var f any
			if err := n.Decode(&f); err != nil {
				return nil, err
			}
			b, err := json.Marshal(f)
			return json.Number(b), err
		case "!!str":
			return n.Value, nil
		default:
			return nil, fmt.Errorf("line %d: %s: tag %s is not JSON", n.Line, at, n.ShortTag())
		}
	}
	return nil, fmt.Errorf("%s: unexpected YAML node kind %d", at, n.Kind)
}

// jsonValue round-trips v through JSON so that the validator sees exactly
// what the API server would receive.
func jsonValue(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(b))
}

// checkSchemaFiles compares the schema files with SHA256SUMS.
func checkSchemaFiles(t *testing.T) {
	t.Helper()
	sums, err := os.ReadFile(filepath.Join(schemaDir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		sum, file, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("SHA256SUMS: bad line %q", line)
		}
		want[file] = sum
	}
	for _, f := range schemaFiles {
		data, err := os.ReadFile(filepath.Join(schemaDir, f))
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.Sum256(data)
		if hex.EncodeToString(got[:]) != want[f] {
			t.Errorf("%s does not match SHA256SUMS: refresh with `make k8s-schemas`, never by hand", f)
		}
	}
}
