package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// envRef matches ${VAR} and ${VAR:-default}.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}`)

// decodeDocument parses raw as YAML into out (a pointer to a struct),
// expanding environment references in scalar values only — after parsing,
// so that a variable's value is always one scalar and can never add keys
// or structure — and refusing keys that out does not know, at any depth.
// A reference to an unset variable is an error naming it and where it is,
// unless it has a default or optional(path) holds for its top-level key.
func decodeDocument(raw []byte, getenv func(string) string, optional func(top string) bool, out any) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("config: %s", yamlError(err))
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if err := expandValues(root, "", getenv, optional); err != nil {
		return err
	}
	if err := knownKeys(root, reflect.TypeOf(out).Elem(), ""); err != nil {
		return err
	}
	if err := root.Decode(out); err != nil {
		return fmt.Errorf("config: %s", yamlError(err))
	}
	return nil
}

// expandValues replaces the references in every scalar value under n.
func expandValues(n *yaml.Node, path string, getenv func(string) string, optional func(string) bool) error {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := expandValues(n.Content[i+1], join(path, n.Content[i].Value), getenv, optional); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if err := expandValues(c, path+"["+strconv.Itoa(i)+"]", getenv, optional); err != nil {
				return err
			}
		}
	case yaml.ScalarNode:
		if !envRef.MatchString(n.Value) {
			return nil
		}
		whole := envRef.FindString(n.Value) == n.Value
		var err error
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
			sub := envRef.FindStringSubmatch(m)
			if v := getenv(sub[1]); v != "" {
				return v
			}
			if strings.Contains(m, ":-") {
				return sub[2]
			}
			top, _, _ := strings.Cut(path, ".")
			top, _, _ = strings.Cut(top, "[")
			if err == nil && !optional(top) {
				err = fmt.Errorf("config: %s (line %d): environment variable %s is not set (write ${%s:-default} where a default is meant)",
					path, n.Line, sub[1], sub[1])
			}
			return ""
		})
		if whole && n.Style == 0 {
			n.Tag = "" // a plain value that was one reference: typed by what it holds
		} else {
			n.Tag = "!!str"
		}
		return err
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// knownKeys refuses a mapping key that the struct type t (through
// pointers and slices) has no field for, naming it and its line: the
// check yaml.v3 makes with KnownFields, which a node's Decode and custom
// unmarshalers skip.
func knownKeys(n *yaml.Node, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case n.Kind == yaml.SequenceNode && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
		for i, c := range n.Content {
			if err := knownKeys(c, t.Elem(), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			fields[name] = f.Type
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := fields[k.Value]
			if !ok {
				return fmt.Errorf("config: line %d: unknown key %q", k.Line, join(path, k.Value))
			}
			if err := knownKeys(n.Content[i+1], ft, join(path, k.Value)); err != nil {
				return err
			}
		}
	}
	return nil
}
