package configsrc

import (
	"context"
	"fmt"
	"path"
	"strings"

	"github.com/slate-os/slate/boot/record"
)

func init() { Register(OrderGCE, GCE{}) }

// GCE metadata paths.
const (
	gceAttributes  = "/computeMetadata/v1/instance/attributes/"
	gceSlateConfig = gceAttributes + "slate-config"
	gceUserData    = gceAttributes + "user-data"
)

// GCE reads the node config from Google Compute Engine's metadata server,
// on a node whose Env.Platform is gce only. Every request carries
// Metadata-Flavor: Google (the server refuses one without it). The config
// is the instance attribute slate-config, whatever it holds (it can only
// be meant for slate); without it, the attribute user-data when that is
// a slate node config (cloud-init's #cloud-config there is left alone).
// The facts: instance/id, instance/zone (projects/N/zones/Z: zone Z, and
// the region Z less its last -x), instance/machine-type (its last
// element) and instance/hostname. Its bound is the package's
// (MetadataTimeout, 8 s, once the network is up).
type GCE struct{ HTTPTiming }

// Name implements Source.
func (GCE) Name() string { return PlatformGCE }

// Fetch implements Source.
func (g GCE) Fetch(ctx context.Context) ([]byte, error) {
	env := EnvFrom(ctx)
	if env.Platform != PlatformGCE {
		return nil, ErrNotFound
	}
	facts := &record.Platform{Name: PlatformGCE}
	env.Facts = facts
	if err := network(ctx, PlatformGCE); err != nil {
		return nil, err
	}
	c, err := newClient(PlatformGCE, env.HTTPBase, g.HTTPTiming, "Metadata-Flavor", "Google")
	if err != nil {
		return nil, err
	}
	bctx, cancel := g.budget(ctx)
	defer cancel()
	b, where, err := g.fetch(bctx, c, facts)
	if err != nil {
		return nil, c.unanswered(ctx, err)
	}
	if where == gceSlateConfig {
		facts.UserData = UserDataConfig
		env.Location = c.url(where)
		return b, nil
	}
	return userData(ctx, facts, c.url(where), b)
}

// fetch returns the slate-config attribute, else the user-data one (nil
// when neither is there), with its path.
func (g GCE) fetch(ctx context.Context, c *mdClient, facts *record.Platform) ([]byte, string, error) {
	var b []byte
	where := gceUserData
	for _, p := range []string{gceSlateConfig, gceUserData} {
		resp, err := c.get(ctx, p)
		if err != nil {
			return nil, "", err
		}
		if resp.status == 404 {
			continue
		}
		if resp.status != 200 {
			return nil, "", fmt.Errorf("GET %s: %s", c.url(p), resp.statusText())
		}
		if p == gceSlateConfig && len(strings.TrimSpace(string(resp.body))) == 0 {
			continue // an empty slate-config is none
		}
		b, where = resp.body, p
		break
	}
	var zone, machineType string
	c.facts(ctx, map[string]*string{
		"/computeMetadata/v1/instance/id":           &facts.InstanceID,
		"/computeMetadata/v1/instance/zone":         &zone,
		"/computeMetadata/v1/instance/machine-type": &machineType,
		"/computeMetadata/v1/instance/hostname":     &facts.Hostname,
	})
	facts.Zone, facts.Region = gceZone(zone)
	facts.InstanceType = lastElem(machineType)
	return b, where, nil
}

// gceZone returns the zone and region of projects/N/zones/us-central1-a:
// us-central1-a and us-central1.
func gceZone(s string) (zone, region string) {
	zone = lastElem(s)
	if i := strings.LastIndexByte(zone, '-'); i > 0 {
		region = zone[:i]
	}
	return zone, region
}

// lastElem is the last element of a slash-separated name ("" for "").
func lastElem(s string) string {
	if s == "" {
		return ""
	}
	return path.Base(s)
}
