package configsrc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/slate-os/slate/boot/record"
)

func init() { Register(OrderNoCloud, NoCloud{}) }

// NoCloudLabel is the label of cloud-init's NoCloud drive (cloud-localds
// writes it in lower case on ISO 9660, mkfs.vfat in upper case).
const NoCloudLabel = "cidata"

// NoCloud reads the node config from the user data on a NoCloud drive, as
// cloud-init's NoCloud datasource does: a vfat or iso9660 filesystem
// labelled cidata or CIDATA, files user-data and meta-data at its root
// (instance-id and local-hostname, the facts). It is a local drive: it
// needs no network and is looked for on any machine, at no wait beyond
// the config drive's (DriveWait, shared).
type NoCloud struct {
	// Drives finds the drive (tests point it at fakes).
	Drives Drives
}

// Name implements Source.
func (NoCloud) Name() string { return PlatformNoCloud }

var isCidata = labelled(func(_, label string) bool {
	return strings.EqualFold(strings.TrimSpace(label), NoCloudLabel)
})

// Fetch implements Source.
func (n NoCloud) Fetch(ctx context.Context) ([]byte, error) {
	d, err := n.Drives.find(ctx, n.Drives.deadline(ctx), "NoCloud drives ("+NoCloudLabel+")", isCidata)
	if errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("nocloud: %w", err)
	}
	facts := &record.Platform{Name: PlatformNoCloud}
	EnvFrom(ctx).Facts = facts
	logf(ctx, "nocloud: drive %s", d)
	var b []byte
	err = n.Drives.mounted(d, "/slate-cidata", func(dir string) error {
		meta, err := readFile(dir, "meta-data")
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return err
		default:
			m := noCloudMeta(meta)
			facts.InstanceID, facts.Hostname = fact(m["instance-id"]), fact(m["local-hostname"])
		}
		b, err = readFile(dir, "user-data")
		if errors.Is(err, os.ErrNotExist) {
			b, err = nil, nil
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("nocloud drive %s: %w", d, err)
	}
	return userData(ctx, facts, d.Dev, b)
}

// noCloudMeta reads the top-level string keys of a meta-data file: JSON,
// or the flat YAML cloud-localds writes (key: value, quoted or not).
// Nested YAML is skipped: the facts are at the top.
func noCloudMeta(b []byte) map[string]string {
	m := map[string]string{}
	if t := strings.TrimSpace(string(b)); strings.HasPrefix(t, "{") {
		var j map[string]any
		if json.Unmarshal(b, &j) == nil {
			for k, v := range j {
				if s, ok := v.(string); ok {
					m[k] = s
				}
			}
		}
		return m
	}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == ' ' || line[0] == '\t' || line[0] == '#' || line[0] == '-' {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		} else if i := strings.Index(v, " #"); i >= 0 {
			v = strings.TrimSpace(v[:i])
		}
		if k = strings.TrimSpace(k); m[k] == "" {
			m[k] = v // a repeated key (invalid YAML): the first value
		}
	}
	return m
}
