package configsrc

import (
	"context"
	"fmt"
	"strings"

	"github.com/slate-os/slate/boot/record"
)

func init() { Register(OrderEC2, EC2{}) }

// EC2 paths and headers (IMDSv2: a session token from a PUT, sent with
// every GET).
const (
	ec2TokenPath   = "/latest/api/token"
	ec2UserData    = "/latest/user-data"
	ec2TokenTTL    = "X-aws-ec2-metadata-token-ttl-seconds"
	ec2TokenHeader = "X-aws-ec2-metadata-token"
)

// EC2 reads the node config from the user data of Amazon EC2's instance
// metadata service (IMDS), on a node whose Env.Platform is ec2 only. It
// takes an IMDSv2 session token (PUT /latest/api/token), then GETs
// /latest/user-data with it (404: the instance has none) and the facts:
// meta-data/instance-id, placement/region, placement/availability-zone,
// instance-type and local-hostname. A token service that refuses the PUT
// (403, 404, 405: IMDSv1 only, as some EC2-compatible clouds) is passed
// by: the GETs go without a token. Its bound is the package's
// (MetadataTimeout, 8 s, once the network is up).
type EC2 struct{ HTTPTiming }

// Name implements Source.
func (EC2) Name() string { return PlatformEC2 }

// Fetch implements Source.
func (e EC2) Fetch(ctx context.Context) ([]byte, error) {
	env := EnvFrom(ctx)
	if env.Platform != PlatformEC2 {
		return nil, ErrNotFound
	}
	facts := &record.Platform{Name: PlatformEC2}
	env.Facts = facts
	if err := network(ctx, PlatformEC2); err != nil {
		return nil, err
	}
	c, err := newClient(PlatformEC2, env.HTTPBase, e.HTTPTiming)
	if err != nil {
		return nil, err
	}
	bctx, cancel := e.budget(ctx)
	defer cancel()
	b, err := e.fetch(bctx, c, facts)
	if err != nil {
		return nil, c.unanswered(ctx, err)
	}
	return userData(ctx, facts, c.url(ec2UserData), b)
}

func (e EC2) fetch(ctx context.Context, c *mdClient, facts *record.Platform) ([]byte, error) {
	resp, err := c.do(ctx, "PUT", ec2TokenPath, []string{ec2TokenTTL, "21600"})
	if err != nil {
		return nil, err
	}
	switch resp.status {
	case 200:
		tok := strings.TrimSpace(string(resp.body))
		if tok == "" || strings.ContainsAny(tok, "\r\n") {
			return nil, fmt.Errorf("PUT %s: an empty or malformed token", c.url(ec2TokenPath))
		}
		c.header = append(c.header, ec2TokenHeader, tok)
	case 403, 404, 405:
		logf(ctx, "ec2: PUT %s: %s: asking without a session token (IMDSv1)", c.url(ec2TokenPath), resp.statusText())
	default:
		return nil, fmt.Errorf("PUT %s: %s", c.url(ec2TokenPath), resp.statusText())
	}

	resp, err = c.get(ctx, ec2UserData)
	if err != nil {
		return nil, err
	}
	var b []byte
	switch resp.status {
	case 200:
		b = resp.body
	case 404: // no user data
	default:
		return nil, fmt.Errorf("GET %s: %s", c.url(ec2UserData), resp.statusText())
	}
	c.facts(ctx, map[string]*string{
		"/latest/meta-data/instance-id":                 &facts.InstanceID,
		"/latest/meta-data/placement/region":            &facts.Region,
		"/latest/meta-data/placement/availability-zone": &facts.Zone,
		"/latest/meta-data/instance-type":               &facts.InstanceType,
		"/latest/meta-data/local-hostname":              &facts.Hostname,
	})
	return b, nil
}
