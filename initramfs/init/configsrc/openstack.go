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

func init() { Register(OrderOpenStack, OpenStack{}) }

// OpenStack's files, on the config drive and from the metadata service.
const (
	Config2Label      = "config-2"
	openStackUserData = "openstack/latest/user_data"
	openStackMetaData = "openstack/latest/meta_data.json"
)

// OpenStack reads the node config from OpenStack's user data: from its
// config drive when there is one (a vfat or iso9660 filesystem labelled
// config-2, files openstack/latest/user_data and meta_data.json), on any
// machine, as it needs no network; else, on a node whose Env.Platform is
// openstack only, from the metadata service (/openstack/latest/user_data,
// 404: none, and /openstack/latest/meta_data.json). The facts come from
// meta_data.json: uuid, availability_zone, hostname (else name). The
// drive costs no wait beyond the config drive's (DriveWait, shared); the
// metadata service is bounded as the package says (MetadataTimeout, 8 s,
// once the network is up).
type OpenStack struct {
	HTTPTiming
	// Drives finds the config drive (tests point it at fakes).
	Drives Drives
}

// Name implements Source.
func (OpenStack) Name() string { return PlatformOpenStack }

var isConfig2 = labelled(func(_, label string) bool {
	return strings.EqualFold(strings.TrimSpace(label), Config2Label)
})

// Fetch implements Source.
func (o OpenStack) Fetch(ctx context.Context) ([]byte, error) {
	env := EnvFrom(ctx)
	d, err := o.Drives.find(ctx, o.Drives.deadline(ctx), "OpenStack config drives ("+Config2Label+")", isConfig2)
	switch {
	case err == nil:
		return o.fromDrive(ctx, d)
	case !errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("openstack: %w", err)
	case env.Platform != PlatformOpenStack:
		return nil, ErrNotFound
	}
	facts := &record.Platform{Name: PlatformOpenStack}
	env.Facts = facts
	if err := network(ctx, PlatformOpenStack); err != nil {
		return nil, err
	}
	c, err := newClient(PlatformOpenStack, env.HTTPBase, o.HTTPTiming)
	if err != nil {
		return nil, err
	}
	bctx, cancel := o.budget(ctx)
	defer cancel()
	b, err := o.fromService(bctx, c, facts)
	if err != nil {
		return nil, c.unanswered(ctx, err)
	}
	return userData(ctx, facts, c.url("/"+openStackUserData), b)
}

// fromDrive reads the config drive.
func (o OpenStack) fromDrive(ctx context.Context, d Drive) ([]byte, error) {
	facts := &record.Platform{Name: PlatformOpenStack}
	EnvFrom(ctx).Facts = facts
	logf(ctx, "openstack: config drive %s", d)
	var b []byte
	err := o.Drives.mounted(d, "/slate-config-2", func(dir string) error {
		meta, err := readFile(dir, openStackMetaData)
		switch {
		case errors.Is(err, os.ErrNotExist):
			logf(ctx, "openstack: config drive %s has no %s: no facts", d.Dev, openStackMetaData)
		case err != nil:
			return err
		default:
			openStackFacts(ctx, facts, meta, d.Dev+": "+openStackMetaData)
		}
		b, err = readFile(dir, openStackUserData)
		if errors.Is(err, os.ErrNotExist) {
			b, err = nil, nil
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("openstack config drive %s: %w", d, err)
	}
	return userData(ctx, facts, d.Dev, b)
}

// fromService asks the metadata service.
func (o OpenStack) fromService(ctx context.Context, c *mdClient, facts *record.Platform) ([]byte, error) {
	var b []byte
	for _, p := range []string{"/" + openStackMetaData, "/" + openStackUserData} {
		resp, err := c.get(ctx, p)
		if err != nil {
			return nil, err
		}
		switch {
		case resp.status == 404:
		case resp.status != 200:
			return nil, fmt.Errorf("GET %s: %s", c.url(p), resp.statusText())
		case p == "/"+openStackMetaData:
			openStackFacts(ctx, facts, resp.body, c.url(p))
		default:
			b = resp.body
		}
	}
	return b, nil
}

// openStackFacts sets the facts from meta_data.json (from where).
func openStackFacts(ctx context.Context, facts *record.Platform, b []byte, where string) {
	var m struct {
		UUID             string `json:"uuid"`
		AvailabilityZone string `json:"availability_zone"`
		Hostname         string `json:"hostname"`
		Name             string `json:"name"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		logf(ctx, "openstack: %s is not JSON: no facts", where)
		return
	}
	facts.InstanceID = fact(m.UUID)
	facts.Zone = fact(m.AvailabilityZone)
	facts.Hostname = fact(m.Hostname)
	if facts.Hostname == "" {
		facts.Hostname = fact(m.Name)
	}
}

// fact is s when it is a short printable line, else "".
func fact(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > maxFact || !isPrintable(s) {
		return ""
	}
	return s
}
