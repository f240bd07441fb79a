// Package strictyaml decodes YAML (and so JSON) documents into Go structs
// strictly: an unknown field, a wrong type or a duplicate key is an error
// that names the field's path (disk.slotSize, units[2].name) and its line.
//
// yaml.v3's KnownFields names the Go type, not the path a user wrote, so
// this walks the parsed node tree against the struct itself. Field names come
// from `yaml` tags; fields without a tag are not settable from a document.
package strictyaml

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/slate-os/slate/internal/clip"
)

// FieldError is a problem with one field of a document.
type FieldError struct {
	Path string // dotted path, e.g. disk.slotSize; empty for the document itself
	Line int
	Msg  string
}

// Error's parts are capped (clip.String): a document's keys and values may
// be megabytes long, and the error must stay one console line.
const (
	MaxPath = 128
	MaxMsg  = 600
)

func (e *FieldError) Error() string {
	where := clip.String(e.Path, MaxPath)
	if where == "" {
		where = "document"
	}
	msg := clip.String(e.Msg, MaxMsg)
	if e.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", where, e.Line, msg)
	}
	return fmt.Sprintf("%s: %s", where, msg)
}

// Unmarshal decodes data into v, a pointer to a struct.
func Unmarshal(data []byte, v any) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return &FieldError{Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return &FieldError{Msg: "empty document"}
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.New("strictyaml: Unmarshal needs a non-nil pointer")
	}
	return decode(doc.Content[0], rv.Elem(), "")
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Describe names what a node holds, for "want X, got Y" messages:
// "a mapping", "a list", "null" or the quoted scalar (its first
// clip.QuoteMax bytes).
func Describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return clip.Quote(n.Value)
	case yaml.AliasNode:
		return "an alias"
	}
	return "a document"
}

func decode(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind == yaml.AliasNode {
		return &FieldError{path, n.Line, "aliases are not allowed"}
	}
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			return &FieldError{path, n.Line, cleanErr(err)}
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Pointer:
		if n.Tag == "!!null" {
			v.Set(reflect.Zero(v.Type()))
			return nil
		}
		p := reflect.New(v.Type().Elem())
		if err := decode(n, p.Elem(), path); err != nil {
			return err
		}
		v.Set(p)
		return nil
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return &FieldError{path, n.Line, "want a mapping, got " + Describe(n)}
		}
		fields := structFields(v.Type())
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			idx, ok := fields[k.Value]
			if !ok {
				return &FieldError{p, k.Line, "unknown field" + suggest(k.Value, fields)}
			}
			if seen[k.Value] {
				return &FieldError{p, k.Line, "field given twice"}
			}
			seen[k.Value] = true
			if err := decode(val, v.FieldByIndex(idx), p); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 { // []byte: base64 as yaml.v3 does it
			break
		}
		if n.Tag == "!!null" {
			v.Set(reflect.Zero(v.Type()))
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return &FieldError{path, n.Line, "want a list, got " + Describe(n)}
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := decode(item, s.Index(i), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return &FieldError{path, n.Line, "want a mapping, got " + Describe(n)}
		}
		if v.Type().Key().Kind() != reflect.String {
			return fmt.Errorf("strictyaml: %s: map keys must be strings", path)
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			key := reflect.ValueOf(k.Value).Convert(v.Type().Key())
			if m.MapIndex(key).IsValid() {
				return &FieldError{p, k.Line, "key given twice"}
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			if err := decode(val, ev, p); err != nil {
				return err
			}
			m.SetMapIndex(key, ev)
		}
		v.Set(m)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return &FieldError{path, n.Line, fmt.Sprintf("want a %s, got %s", scalarName(v.Kind()), Describe(n))}
	}
	if v.Kind() == reflect.String && n.Tag != "!!str" && n.Tag != "!!null" {
		// yaml.v3 would quietly turn 0644 or yes into a string; a string
		// field wants the user to have meant a string.
		if n.Tag == "!!int" || n.Tag == "!!float" || n.Tag == "!!bool" {
			v.SetString(n.Value)
			return nil
		}
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		return &FieldError{path, n.Line, fmt.Sprintf("want a %s, got %s", scalarName(v.Kind()), Describe(n))}
	}
	return nil
}

func scalarName(k reflect.Kind) string {
	switch k {
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "whole number"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.String:
		return "string"
	}
	return k.String()
}

func structFields(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && strings.Contains(opts, "inline") {
			for k, idx := range structFields(f.Type) {
				out[k] = append([]int{i}, idx...)
			}
			continue
		}
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		out[name] = []int{i}
	}
	return out
}

// suggest names a known field that differs only in case, the most common slip.
func suggest(key string, fields map[string][]int) string {
	for k := range fields {
		if strings.EqualFold(k, key) {
			return fmt.Sprintf(" (did you mean %q?)", k)
		}
	}
	return ""
}

func cleanErr(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	if i := strings.Index(s, ": "); i >= 0 && strings.HasPrefix(s, "unmarshal errors") {
		s = strings.TrimSpace(s[i+2:])
	}
	return s
}
