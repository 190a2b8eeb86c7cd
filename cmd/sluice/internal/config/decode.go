package config

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// LoadConfig reads and checks a configuration file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes YAML (or JSON), rejecting unknown fields, fills in
// defaults and checks every value. Its errors name the offending field.
func ParseConfig(b []byte) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) == 0 {
		return nil, errors.New("functions: none configured; the file is empty")
	}
	var cfg Config
	if err := decodeFields(doc.Content[0], &cfg, ""); err != nil {
		return nil, err
	}
	if err := cfg.SetDefaultsAndCheck(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// decodeFields decodes a YAML mapping into the struct v points to, field by
// field and recursively, so that an error names the field (a.b, list[i].c)
// rather than only a line. Unknown keys are errors at every level, and so
// is a key given twice in one mapping. Anchors, aliases and merge keys
// (<<: *base) work as YAML defines them; see [mappingPairs].
func decodeFields(n *yaml.Node, v any, path string) error {
	m := resolveAlias(n)
	if m.Kind != yaml.MappingNode {
		return fmt.Errorf("%s: line %d: want a mapping of field names to values", cmp.Or(path, "the file"), n.Line)
	}
	pairs, err := mappingPairs(m, path, make(map[*yaml.Node]bool))
	if err != nil {
		return err
	}
	rv := reflect.ValueOf(v).Elem()
	fields := make(map[string]reflect.Value, rv.NumField())
	var known []string
	for i := range rv.NumField() {
		if !rv.Type().Field(i).IsExported() {
			continue
		}
		name, _, _ := strings.Cut(rv.Type().Field(i).Tag.Get("yaml"), ",")
		fields[name] = rv.Field(i)
		known = append(known, name)
	}
	for i := 0; i+1 < len(pairs); i += 2 {
		key, val := pairs[i], pairs[i+1]
		field, ok := fields[key.Value]
		if !ok {
			return fmt.Errorf("%s%s: line %d: unknown field; known fields are %s", prefix(path), key.Value, key.Line, strings.Join(known, ", "))
		}
		if err := decodeValue(val, field, prefix(path)+key.Value); err != nil {
			return err
		}
	}
	return nil
}

// mappingPairs returns the keys and values (key, value, key, value, …) of
// mapping n as YAML reads them: its own, and, in place of each merge key
// (<<), those of the mappings it names (one, or a list) that n does not give
// itself, an earlier mapping in the list winning over a later one. A key
// given twice in one mapping is an error naming both lines; visiting holds
// the mappings being merged, so that one merging itself is an error too.
func mappingPairs(n *yaml.Node, path string, visiting map[*yaml.Node]bool) ([]*yaml.Node, error) {
	own := make(map[string]*yaml.Node)
	merges := false
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := n.Content[i]
		if first, dup := own[key.Value]; dup {
			return nil, fmt.Errorf("%s%s: line %d: given twice (first at line %d)", prefix(path), key.Value, key.Line, first.Line)
		}
		own[key.Value] = key
		merges = merges || isMergeKey(key)
	}
	if !merges {
		return n.Content, nil
	}
	visiting[n] = true
	defer delete(visiting, n)
	taken := make(map[string]bool)
	var out []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		if !isMergeKey(key) {
			out = append(out, key, val)
			continue
		}
		sources := []*yaml.Node{val}
		if v := resolveAlias(val); v.Kind == yaml.SequenceNode {
			sources = v.Content
		}
		for _, src := range sources {
			m := resolveAlias(src)
			if m.Kind != yaml.MappingNode {
				return nil, fmt.Errorf("%s<<: line %d: a merge key takes a mapping or a list of mappings", prefix(path), key.Line)
			}
			if visiting[m] {
				return nil, fmt.Errorf("%s<<: line %d: a merge key includes the mapping it is in", prefix(path), key.Line)
			}
			merged, err := mappingPairs(m, path, visiting)
			if err != nil {
				return nil, err
			}
			for j := 0; j+1 < len(merged); j += 2 {
				name := merged[j].Value
				if _, mine := own[name]; mine || taken[name] {
					continue
				}
				taken[name] = true
				out = append(out, merged[j], merged[j+1])
			}
		}
	}
	return out, nil
}

// isMergeKey reports whether key is YAML's merge key: a plain <<.
func isMergeKey(key *yaml.Node) bool {
	return key.Kind == yaml.ScalarNode && key.ShortTag() == "!!merge"
}

// resolveAlias returns the node an alias stands for, and any other node
// itself.
func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// decodeValue decodes one value: structs and lists of structs field by
// field, everything else (scalars and the types with their own
// UnmarshalYAML) as yaml decodes it.
func decodeValue(n *yaml.Node, field reflect.Value, path string) error {
	switch {
	case reflect.PointerTo(field.Type()).Implements(unmarshalerType):
	case field.Kind() == reflect.Struct:
		return decodeFields(n, field.Addr().Interface(), path)
	case field.Kind() == reflect.Pointer && field.Type().Elem().Kind() == reflect.Struct:
		field.Set(reflect.New(field.Type().Elem()))
		return decodeFields(n, field.Interface(), path)
	case field.Kind() == reflect.Slice && field.Type().Elem().Kind() == reflect.Struct:
		list := resolveAlias(n)
		if list.Kind != yaml.SequenceNode {
			return fmt.Errorf("%s: line %d: want a list", path, n.Line)
		}
		field.Set(reflect.MakeSlice(field.Type(), len(list.Content), len(list.Content)))
		for i, item := range list.Content {
			if err := decodeFields(item, field.Index(i).Addr().Interface(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := n.Decode(field.Addr().Interface()); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func prefix(path string) string {
	if path == "" {
		return ""
	}
	return path + "."
}
