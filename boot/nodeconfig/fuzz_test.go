package nodeconfig

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/slate-os/slate/internal/strictyaml"
)

// roundTrip checks that a parsed config re-marshals, as JSON (what Apply
// records for the agent), to a document that parses, with Parse and with
// encoding/json, to the same value; and, with yamlToo, that yaml.Marshal's
// YAML does too.
//
// The fuzz target leaves YAML out: yaml.v3's emitter mangles some strings
// in block style, which is its bug and not the schema's: a literal block
// inside a list whose first line starts with a space or a tab gets a wrong
// indentation indicator that yaml.v3 cannot read back (yaml/go-yaml#76),
// and "\n" comes back as "" (seeds yaml-v3-block-indent, yaml-v3-block-newline).
func roundTrip(t testing.TB, c *Config, yamlToo bool) {
	t.Helper()
	j, err := c.JSON()
	if err != nil {
		t.Fatalf("JSON: %v", err)
	}
	back, err := Parse(j)
	if err != nil {
		t.Fatalf("the config's JSON does not parse: %v\n%s", err, j)
	}
	if !reflect.DeepEqual(c, back) {
		t.Fatalf("JSON round trip changed the config:\n%#v\n%#v\n%s", c, back, j)
	}
	// The agent may read the record with encoding/json alone.
	var plain Config
	if err := json.Unmarshal(j, &plain); err != nil {
		t.Fatalf("encoding/json cannot read the config's JSON: %v\n%s", err, j)
	}
	if !reflect.DeepEqual(c, &plain) {
		t.Fatalf("encoding/json reads the config's JSON differently:\n%#v\n%#v\n%s", c, &plain, j)
	}
	if yamlToo {
		y, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("yaml.Marshal: %v", err)
		}
		back, err = Parse(y)
		if err != nil {
			t.Fatalf("the config's YAML does not parse: %v\n%s", err, y)
		}
		if !reflect.DeepEqual(c, back) {
			t.Fatalf("YAML round trip changed the config:\n%#v\n%#v\n%s", c, back, y)
		}
	}
}

// FuzzParse: Parse never panics, every error it returns names a field (or
// the document) and is short, and what it accepts round-trips. The seed
// corpus is testdata/fuzz/FuzzParse plus the examples in configs/node.
func FuzzParse(f *testing.F) {
	examples, _ := filepath.Glob("../../configs/node/*.*")
	for _, e := range examples {
		if data, err := os.ReadFile(e); err == nil && filepath.Ext(e) != ".md" {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			var fe *strictyaml.FieldError
			if c != nil || !errors.As(err, &fe) {
				t.Fatalf("want no config and a *strictyaml.FieldError, got %v, %T %v", c, err, err)
			}
			if len(err.Error()) > maxErr { // capped: it goes on one console line
				t.Fatalf("a %d-byte error: %.200s", len(err.Error()), err)
			}
			return
		}
		roundTrip(t, c, false)
	})
}
