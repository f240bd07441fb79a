package configsrc

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/slate-os/slate/boot"
	"github.com/slate-os/slate/initramfs/init/cmdline"
)

func init() { Register(OrderCmdline, Cmdline{}) }

// Cmdline reads a config given inline on the kernel command line as an
// RFC 2397 data: URL:
//
//	slate.config=data:[<mediatype>][;base64],<data>
//
// e.g. slate.config=data:;base64,YXBpVmVyc2lvbjog... (base64 -w0 of the
// file) or, for a tiny one, slate.config=data:,%7B%22apiVersion%22...
// The kernel takes 2 KiB of command line on x86, so this is for small
// configs. The last slate.config= wins, as for every kernel argument.
type Cmdline struct {
	// Proc is /proc/cmdline, read when the Env carries no command line.
	Proc string
}

// Name implements Source.
func (Cmdline) Name() string { return "cmdline" }

// Fetch implements Source.
func (c Cmdline) Fetch(ctx context.Context) ([]byte, error) {
	line := EnvFrom(ctx).Cmdline
	if line == "" {
		p := c.Proc
		if p == "" {
			p = "/proc/cmdline"
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		line = string(b)
	}
	v, ok := cmdline.Value(cmdline.Split(line), boot.ArgConfig)
	if !ok {
		return nil, ErrNotFound
	}
	EnvFrom(ctx).Location = boot.ArgConfig
	_, data, err := ParseDataURL(v)
	if err != nil {
		return nil, fmt.Errorf("%s=: %w", boot.ArgConfig, err)
	}
	return data, nil
}

// ParseDataURL decodes an RFC 2397 data: URL,
// data:[<mediatype>][;base64],<data>. The media type is checked for form
// only (type/subtype and attribute=value parameters) and returned as
// written, "" if absent; the data is percent-decoded, then base64-decoded
// (standard alphabet, padding optional) when ;base64 is given. A URL
// without data is an error: it holds no config.
func ParseDataURL(s string) (mediaType string, data []byte, err error) {
	const scheme = "data:"
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		if s == "" {
			return "", nil, errors.New("empty: want a data: URL, data:[<mediatype>][;base64],<data>")
		}
		return "", nil, fmt.Errorf("%q is not a data: URL (want data:[<mediatype>][;base64],<data>)", truncate(s, 24))
	}
	header, payload, ok := strings.Cut(s[len(scheme):], ",")
	if !ok {
		return "", nil, errors.New("data: URL has no ',' before its data (want data:[<mediatype>][;base64],<data>)")
	}
	isBase64 := false
	params := strings.Split(header, ";")
	if n := len(params); n > 1 && strings.EqualFold(params[n-1], "base64") {
		isBase64 = true
		params = params[:n-1]
	}
	if params[0] != "" {
		typ, sub, ok := strings.Cut(params[0], "/")
		if !ok || !isToken(typ) || !isToken(sub) {
			return "", nil, fmt.Errorf("data: URL media type %q is not type/subtype", params[0])
		}
	}
	for _, p := range params[1:] {
		k, _, ok := strings.Cut(p, "=")
		if !ok || !isToken(k) {
			if strings.Contains(strings.ToLower(p), "base64") {
				return "", nil, fmt.Errorf("data: URL parameter %q: ;base64 must come last, just before the ','", p)
			}
			return "", nil, fmt.Errorf("data: URL media type parameter %q is not attribute=value", p)
		}
	}
	raw, err := percentDecode(payload)
	if err != nil {
		return "", nil, fmt.Errorf("data: URL data: %w", err)
	}
	if isBase64 {
		enc := strings.TrimRight(string(raw), "=")
		raw, err = base64.RawStdEncoding.DecodeString(enc)
		if err != nil {
			return "", nil, fmt.Errorf("data: URL data is not valid base64: %w", err)
		}
	}
	if len(raw) == 0 {
		return "", nil, errors.New("data: URL holds no data")
	}
	return params[0], raw, nil
}

// isToken is true for a non-empty RFC 2045 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?=`, c) >= 0 {
			return false
		}
	}
	return true
}

// percentDecode decodes %XX escapes; anything else is kept as is ('+' is
// a plus sign: this is not a form).
func percentDecode(s string) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			out = append(out, s[i])
			continue
		}
		if i+2 >= len(s) || unhex(s[i+1]) < 0 || unhex(s[i+2]) < 0 {
			return nil, fmt.Errorf("bad escape %q at byte %d (want %%XX with two hex digits)", truncate(s[i:], 3), i)
		}
		out = append(out, byte(unhex(s[i+1])<<4|unhex(s[i+2])))
		i += 2
	}
	return out, nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
