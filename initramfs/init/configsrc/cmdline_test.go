package configsrc

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseDataURL(t *testing.T) {
	for _, tc := range []struct {
		in, mediaType, data string
	}{
		{"data:,hello", "", "hello"},
		{"DATA:,hello", "", "hello"},
		{"data:,a+b", "", "a+b"}, // not a form: '+' stays
		{"data:,hostname:%20node-1%0Akind:%20NodeConfig", "", "hostname: node-1\nkind: NodeConfig"},
		{"data:,%7b%22a%22%3A1%7D", "", `{"a":1}`},
		{"data:application/yaml,x:%201", "application/yaml", "x: 1"},
		{"data:text/plain;charset=utf-8,caf%C3%A9", "text/plain", "café"},
		{"data:;base64,aGVsbG8=", "", "hello"},
		{"data:;base64,aGVsbG8", "", "hello"}, // padding optional
		{"data:;BASE64,aGVsbG8=", "", "hello"},
		{"data:application/yaml;base64,a2luZDogTm9kZUNvbmZpZwo=", "application/yaml", "kind: NodeConfig\n"},
		{"data:application/json;charset=utf-8;base64,eyJhIjoxfQ==", "application/json", `{"a":1}`},
		{"data:;base64,aGVsbG8%3D", "", "hello"},           // percent-encoded padding
		{"data:;base64,Pz8/Pz8+", "", "?????>"},            // '+' and '/' of the standard alphabet
		{"data:,with,more,commas", "", "with,more,commas"}, // only the first ',' ends the header
	} {
		mt, data, err := ParseDataURL(tc.in)
		if err != nil || mt != tc.mediaType || string(data) != tc.data {
			t.Errorf("ParseDataURL(%q) = %q, %q, %v; want %q, %q", tc.in, mt, data, err, tc.mediaType, tc.data)
		}
	}
	for _, tc := range []struct{ in, err string }{
		{"", "empty: want a data: URL"},
		{"hello", `"hello" is not a data: URL`},
		{"http://10.0.2.2/node.yaml", `"http://10.0.2.2/node.yam…" is not a data: URL`},
		{"data:hello", "has no ','"},
		{"data:;base64", "has no ','"},
		{"data:,", "holds no data"},
		{"data:;base64,", "holds no data"},
		{"data:,abc%", `bad escape "%" at byte 3`},
		{"data:,abc%4", `bad escape "%4" at byte 3`},
		{"data:,abc%zz", `bad escape "%zz" at byte 3`},
		{"data:;base64,aGVsbG8*", "not valid base64"},
		{"data:;base64,a", "not valid base64"},
		{"data:;base64,aGVs bG8=", "not valid base64"},
		{"data:;base64;charset=utf-8,aGVsbG8=", ";base64 must come last"},
		{"data:yaml,x", `media type "yaml" is not type/subtype`},
		{"data:application/,x", `media type "application/" is not type/subtype`},
		{"data:text/plain;charset,x", `parameter "charset" is not attribute=value`},
	} {
		_, _, err := ParseDataURL(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseDataURL(%q): error %v, want one with %q", tc.in, err, tc.err)
		}
	}
}

func TestCmdlineSource(t *testing.T) {
	fetch := func(line string) ([]byte, *Env, error) {
		env := &Env{Cmdline: line}
		b, err := Cmdline{}.Fetch(WithEnv(context.Background(), env))
		return b, env, err
	}
	if _, env, err := fetch("console=ttyS0 slate.slot=a quiet"); !errors.Is(err, ErrNotFound) || env.Location != "" {
		t.Errorf("no slate.config: %v, location %q", err, env.Location)
	}
	b, env, err := fetch("console=ttyS0 slate.config=data:;base64,aG9zdG5hbWU6IG4xCg== slate.slot=a -- single")
	if err != nil || string(b) != "hostname: n1\n" || env.Location != "slate.config" {
		t.Errorf("base64: %q %v, location %q", b, err, env.Location)
	}
	// Quoted by the boot loader's editor: the kernel drops the quotes.
	if b, _, err := fetch(`slate.config="data:,hostname: n2"`); err != nil || string(b) != "hostname: n2" {
		t.Errorf("quoted: %q %v", b, err)
	}
	// The last one wins, as for every kernel argument.
	if b, _, err := fetch("slate.config=data:,one slate.config=data:,two"); err != nil || string(b) != "two" {
		t.Errorf("last wins: %q %v", b, err)
	}
	// Present but malformed: found, with an error that names the argument.
	_, env, err = fetch("slate.config=node.yaml")
	if err == nil || errors.Is(err, ErrNotFound) || !strings.HasPrefix(err.Error(), `slate.config=: "node.yaml" is not a data: URL`) || env.Location != "slate.config" {
		t.Errorf("malformed: %v, location %q", err, env.Location)
	}
	if _, _, err := fetch("slate.config="); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "slate.config=: empty") {
		t.Errorf("empty: %v", err)
	}

	// Without a command line in the Env it reads /proc/cmdline.
	proc := filepath.Join(t.TempDir(), "cmdline")
	os.WriteFile(proc, []byte("ro slate.config=data:,x%3A%201\n"), 0o444)
	if b, err := (Cmdline{Proc: proc}).Fetch(context.Background()); err != nil || string(b) != "x: 1" {
		t.Errorf("from /proc/cmdline: %q %v", b, err)
	}
	if _, err := (Cmdline{Proc: filepath.Join(t.TempDir(), "none")}).Fetch(context.Background()); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("unreadable /proc/cmdline: %v", err)
	}
}
