package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Sections are the top-level keys of the file, one per daemon.
var Sections = []string{"sensor", "agent", "plane"}

// MaxBytes bounds a configuration file.
const MaxBytes = 1 << 20

// Decode decodes section name of the YAML document data into into, a
// non-nil pointer to a struct holding the defaults. Keys of into's section
// that its type does not know, and top-level keys other than Sections, are
// errors; the other sections are not looked at. An empty document leaves
// into as it is.
func Decode(data []byte, name string, into any) error {
	v := reflect.ValueOf(into)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config: decode %s into %T: want a non-nil pointer to a struct", name, into)
	}
	if len(data) > MaxBytes {
		return fmt.Errorf("config: larger than %d bytes", MaxBytes)
	}
	// A struct made for this call: the wanted section decodes into the
	// caller's value (strictly, with exact line numbers), the others into
	// raw nodes.
	fields := make([]reflect.StructField, 0, len(Sections))
	want := -1
	for i, s := range Sections {
		typ := reflect.TypeOf(yaml.Node{})
		if s == name {
			typ, want = v.Type(), i
		}
		fields = append(fields, reflect.StructField{Name: strings.ToUpper(s[:1]) + s[1:], Type: typ,
			Tag: reflect.StructTag(fmt.Sprintf(`yaml:%q`, s))})
	}
	if want < 0 {
		return fmt.Errorf("config: unknown section %q (sections: %s)", name, strings.Join(Sections, ", "))
	}
	doc := reflect.New(reflect.StructOf(fields))
	doc.Elem().Field(want).Set(v)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(doc.Interface()); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: %w", nameKeys(data, err))
	}
	// A null section sets the field to nil and leaves *into untouched: the
	// defaults stand.
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("config: more than one YAML document")
	}
	return nil
}

// Load reads the file at path and decodes its section name into into.
func Load(path, name string, into any) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxBytes+1))
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	if err := Decode(data, name, into); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// nameKeys rewrites yaml's "line N: ..." messages to start with the dotted
// key at that line ("sensor.flush (line 2): ..."): yaml names unknown keys
// but not the key of a value of the wrong type.
func nameKeys(data []byte, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		return err
	}
	keys := map[int]string{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for i, c := range n.Content {
				p := path
				if n.Kind == yaml.SequenceNode {
					p = fmt.Sprintf("%s[%d]", path, i)
				}
				walk(c, p)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i].Value
				if path != "" {
					k = path + "." + k
				}
				if _, ok := keys[n.Content[i].Line]; !ok {
					keys[n.Content[i].Line] = k
				}
				walk(n.Content[i+1], k)
			}
		}
	}
	walk(&root, "")
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		var line int
		if _, serr := fmt.Sscanf(m, "line %d:", &line); serr == nil {
			if k, ok := keys[line]; ok {
				m = k + " (" + m[:strings.Index(m, ":")] + ")" + m[strings.Index(m, ":"):]
			}
		}
		msgs[i] = m
	}
	return errors.New(strings.Join(msgs, "; "))
}
