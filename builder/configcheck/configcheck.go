// Package configcheck checks a node config offline, as the init would at
// boot: the config alone (boot/nodeconfig's Parse: the schema and every
// field), and, given the image, against the image's tree (nodeconfig's
// Apply up to its first write: paths and the symlinks on them, files that
// exist without overwrite, owners in /etc/passwd and /etc/group, units and
// their [Install] sections, the time zone, breakGlass).
//
// The image is never unpacked whole: its flattened root (builder/flatten,
// with the units slate's builder adds on top) streams by, and only what a
// config can touch or refer to is written to a temporary tree: the top
// level's directories and symbolic links, /etc, the unit directories under
// /usr/lib and /lib, and, for a config that sets a time zone, the zoneinfo
// database. /run is empty, as the init's tmpfs is.
package configcheck

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/slate-os/slate/boot/nodeconfig"
	"github.com/slate-os/slate/builder/flatten"
	"github.com/slate-os/slate/builder/nodefiles"
)

// Result is what a valid config would do.
type Result struct {
	Config *nodeconfig.Config
	// Applied is what the init would apply on the image; nil when the
	// config was checked alone.
	Applied *nodeconfig.Applied
}

// Summary says in a few words what the config does, as the init's console
// line does: "hostname node-1, timezone Europe/Paris, 3 files, 1 unit"
// (the files are the config's; the init counts every file it wrote).
func (r *Result) Summary() string {
	var parts []string
	c := r.Config
	host, tz := c.Hostname, c.Timezone
	if r.Applied != nil {
		host, tz = r.Applied.Hostname, r.Applied.Timezone
	}
	if host != "" {
		parts = append(parts, "hostname "+host)
	}
	if tz != "" {
		parts = append(parts, "timezone "+tz)
	}
	parts = append(parts, plural(len(c.Files), "file"))
	if n := len(c.Systemd.Units); n > 0 {
		parts = append(parts, plural(n, "unit"))
	}
	if r.Applied != nil && r.Applied.Tainted || r.Applied == nil && c.Access.BreakGlass {
		parts = append(parts, "breakGlass: taints the node")
	}
	return strings.Join(parts, ", ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// InvalidError is a config the init would refuse; its message is the
// init's.
type InvalidError struct {
	// ForImage is set when the config is valid alone but not for the image.
	ForImage bool
	Err      error
}

func (e *InvalidError) Error() string {
	if e.ForImage {
		return "invalid for this image, nothing would be applied: " + e.Err.Error()
	}
	return "invalid, nothing would be applied: " + e.Err.Error()
}

func (e *InvalidError) Unwrap() error { return e.Err }

// Config checks a config alone.
func Config(data []byte) (*Result, error) {
	c, err := nodeconfig.Parse(data)
	if err != nil {
		return nil, &InvalidError{Err: err}
	}
	return &Result{Config: c}, nil
}

// errChecked stops Apply before its first write.
var errChecked = errors.New("configcheck: checked")

// Image checks a config against img's root, as slate's builder makes it
// (img with slate's units on top). Errors that are not the config's (the
// image cannot be read) are not *InvalidError.
func Image(ctx context.Context, data []byte, img v1.Image) (*Result, error) {
	r, err := Config(data)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "slate-configcheck-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "root")
	want := selection(r.Config)
	err = flatten.Stream(ctx, img, flatten.Options{Upper: []v1.Layer{nodefiles.UnitsLayer()}},
		func(ctx context.Context, stream io.Reader) error {
			// Stream may call again with a second pass: start afresh.
			if err := os.RemoveAll(root); err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Join(root, "run"), 0o755); err != nil {
				return err
			}
			return extract(ctx, stream, root, want)
		})
	if err != nil {
		return nil, fmt.Errorf("reading the image: %w", err)
	}
	_, err = r.Config.ApplyWith(root, func(a *nodeconfig.Applied) error {
		r.Applied = a
		return errChecked
	})
	if !errors.Is(err, errChecked) {
		return nil, &InvalidError{ForImage: true, Err: err}
	}
	return r, nil
}

// selection says which of the root's paths (normalized, no leading slash)
// the check needs.
func selection(c *nodeconfig.Config) func(name string) bool {
	prefixes := []string{"etc", "usr/lib/systemd/system", "lib/systemd/system"}
	if c.Timezone != "" {
		prefixes = append(prefixes, "usr/share/zoneinfo")
	}
	return func(name string) bool {
		if !strings.Contains(name, "/") {
			return true // the top level: /lib may be a link to usr/lib
		}
		for _, p := range prefixes {
			if name == p || strings.HasPrefix(name, p+"/") || strings.HasPrefix(p, name+"/") {
				return true // under a prefix, or on the way to one
			}
		}
		return false
	}
}

// extract writes the entries of a root's tar stream that want selects under
// root, and reads the rest to the end.
func extract(ctx context.Context, stream io.Reader, root string, want func(string) bool) error {
	tr := tar.NewReader(stream)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if name == "" || !want(name) {
			continue
		}
		if err := write(root, name, h, tr); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
}

// write creates one entry under root. flatten's stream has no entry under
// a symbolic link and no name out of the root; the parents are checked
// anyway, so that no link of the image's can lead a write out of root.
func write(root, name string, h *tar.Header, r io.Reader) error {
	if err := parents(root, name); err != nil {
		return err
	}
	p := filepath.Join(root, name)
	perm := os.FileMode(h.Mode&0o777) | 0o600 // readable by the check, removable after it
	switch h.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(p, perm|0o700); err != nil && !os.IsExist(err) {
			return err
		}
		return os.Chmod(p, perm|0o700)
	case tar.TypeSymlink:
		os.RemoveAll(p)
		return os.Symlink(h.Linkname, p)
	case tar.TypeLink:
		os.Remove(p)
		target := filepath.Join(root, strings.TrimPrefix(path.Clean("/"+h.Linkname), "/"))
		if err := os.Link(target, p); err == nil {
			return nil
		}
		// The target is outside the selection: a file all the same, its
		// contents unknown.
		return os.WriteFile(p, nil, perm)
	case tar.TypeReg:
		os.Remove(p)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, r); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	// Devices, FIFOs: something is there, and it is not a directory.
	os.Remove(p)
	return os.WriteFile(p, nil, perm)
}

// parents makes the directories on the way to name, refusing any that is
// not a directory.
func parents(root, name string) error {
	d := root
	parts := strings.Split(name, "/")
	for _, part := range parts[:len(parts)-1] {
		d = filepath.Join(d, part)
		fi, err := os.Lstat(d)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if err := os.Mkdir(d, 0o755); err != nil {
				return err
			}
		case err != nil:
			return err
		case !fi.IsDir():
			return fmt.Errorf("%s is not a directory", strings.TrimPrefix(d, root))
		}
	}
	return nil
}
