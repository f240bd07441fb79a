package configsrc

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/slate-os/slate/boot/record"
)

func init() { Register(OrderAzure, Azure{}) }

// FSUDF is UDF as mount(2) names it: Azure's provisioning CD.
const FSUDF = "udf"

// Azure's instance metadata document (userData needs 2021-01-01 or later)
// and its provisioning file.
const (
	azureInstance = "/metadata/instance?api-version=2021-02-01"
	azureOVFEnv   = "ovf-env.xml"
)

// Azure reads the node config on a node whose Env.Platform is azure, from
// the two places Azure puts user data:
//   - customData (az vm create --custom-data), which only the
//     provisioning CD carries: base64 in ovf-env.xml, element CustomData,
//     on a CD-ROM (sr*) with a UDF or ISO 9660 filesystem; the CD needs
//     no network. Without the CD (or the kernel's udf module), customData
//     is not read and the console says so.
//   - userData (--user-data), from the instance metadata service (IMDS):
//     GET /metadata/instance?api-version=2021-02-01 with Metadata: true
//     (IMDS refuses a request without it), compute.userData, base64.
//
// Whichever is a slate node config is the config; both, and different, is
// an error (which one was meant?). The facts come from the same document:
// compute.vmId, location, zone, vmSize, and the hostname of ovf-env.xml,
// else osProfile.computerName, else name. The CD costs no wait beyond the
// config drive's (DriveWait, shared); IMDS is bounded as the package says
// (MetadataTimeout, 8 s, once the network is up), and retried on 404 and
// 410 as well, which it answers while the VM is being provisioned.
//
// Azure waits for a provisioned VM to report ready to its wire server;
// this source does not do that.
type Azure struct {
	HTTPTiming
	// Drives finds the provisioning CD (tests point it at fakes).
	Drives Drives
}

// Name implements Source.
func (Azure) Name() string { return PlatformAzure }

// Fetch implements Source.
func (a Azure) Fetch(ctx context.Context) ([]byte, error) {
	env := EnvFrom(ctx)
	if env.Platform != PlatformAzure {
		return nil, ErrNotFound
	}
	facts := &record.Platform{Name: PlatformAzure}
	env.Facts = facts

	custom, cdDev, cdErr := a.customData(ctx, facts)
	if cdErr != nil {
		logf(ctx, "azure: %v: customData not read", cdErr)
	}
	var user []byte
	var userURL string
	imdsErr := network(ctx, PlatformAzure)
	if imdsErr == nil {
		c, err := newClient(PlatformAzure, env.HTTPBase, a.HTTPTiming, "Metadata", "true")
		if err != nil {
			return nil, err
		}
		c.retryStatus = func(s int) bool { return s == 404 || s == 410 }
		bctx, cancel := a.budget(ctx)
		user, imdsErr = a.userData(bctx, c, facts)
		cancel()
		if imdsErr != nil {
			imdsErr = c.unanswered(ctx, imdsErr)
		}
		userURL = c.url(azureInstance)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	customOK, customKind := IsNodeConfig(custom)
	userOK, userKind := IsNodeConfig(user)
	switch {
	case customOK && userOK && !bytes.Equal(custom, user):
		return nil, fmt.Errorf("azure: customData (%s) and userData (%s) are both slate node configs, and they differ: refusing to guess", cdDev, userURL)
	case customOK:
		facts.UserData = UserDataConfig
		env.Location = cdDev
		return custom, nil
	case userOK:
		facts.UserData = UserDataConfig
		env.Location = userURL
		return user, nil
	}
	switch {
	case customKind != "":
		facts.UserData = userDataOther(customKind)
		logf(ctx, "azure: the customData on %s is not a slate node config (%s): ignoring it", cdDev, customKind)
	case userKind != "":
		facts.UserData = userDataOther(userKind)
		logf(ctx, "azure: the userData at %s is not a slate node config (%s): ignoring it", userURL, userKind)
	case cdErr == nil && imdsErr == nil:
		facts.UserData = UserDataNone
		logf(ctx, "azure: no customData and no userData")
	}
	// Nothing found; one of the two places could not be read and may have
	// held a config: say so.
	switch {
	case imdsErr != nil && !errors.Is(imdsErr, ErrNotFound):
		return nil, fmt.Errorf("azure: %w", imdsErr)
	case cdErr != nil:
		return nil, fmt.Errorf("azure: %w", cdErr)
	}
	return nil, ErrNotFound
}

// userData asks IMDS for the instance's document and returns its userData
// (nil for none).
func (a Azure) userData(ctx context.Context, c *mdClient, facts *record.Platform) ([]byte, error) {
	resp, err := c.get(ctx, azureInstance)
	if err != nil {
		return nil, err
	}
	url := c.url(azureInstance)
	if resp.status != 200 {
		return nil, fmt.Errorf("GET %s: %s", url, resp.statusText())
	}
	var doc struct {
		Compute struct {
			VMID      string `json:"vmId"`
			Location  string `json:"location"`
			Zone      string `json:"zone"`
			VMSize    string `json:"vmSize"`
			Name      string `json:"name"`
			UserData  string `json:"userData"`
			OSProfile struct {
				ComputerName string `json:"computerName"`
			} `json:"osProfile"`
		} `json:"compute"`
	}
	// The error's text is not kept: it may quote the user data.
	if json.Unmarshal(resp.body, &doc) != nil {
		return nil, fmt.Errorf("GET %s: the answer is not the instance's JSON document", url)
	}
	cp := doc.Compute
	facts.InstanceID, facts.Region, facts.Zone, facts.InstanceType = fact(cp.VMID), fact(cp.Location), fact(cp.Zone), fact(cp.VMSize)
	for _, h := range []string{cp.OSProfile.ComputerName, cp.Name} {
		if facts.Hostname == "" {
			facts.Hostname = fact(h)
		}
	}
	if cp.UserData == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(cp.UserData)
	if err != nil {
		return nil, fmt.Errorf("GET %s: compute.userData is not base64", url)
	}
	return b, nil
}

// customData finds the provisioning CD and returns ovf-env.xml's
// customData (nil for none) and the CD's device; it sets the hostname the
// file names. No CD is not an error: the console says so.
func (a Azure) customData(ctx context.Context, facts *record.Platform) ([]byte, string, error) {
	cds, err := a.cds(ctx)
	if err != nil {
		return nil, "", err
	}
	var firstErr error
	for _, d := range cds {
		var doc []byte
		err := a.Drives.mounted(d, "/slate-azure-cd", func(dir string) error {
			var err error
			doc, err = readFile(dir, azureOVFEnv)
			return err
		})
		if errors.Is(err, os.ErrNotExist) {
			continue // another CD
		}
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("CD %s: %w", d, err)
			}
			continue
		}
		logf(ctx, "azure: provisioning CD %s", d)
		custom, host, err := parseOVFEnv(doc)
		if err != nil {
			return nil, d.Dev, fmt.Errorf("provisioning CD %s: %w", d, err)
		}
		facts.Hostname = fact(host)
		return custom, d.Dev, nil
	}
	if firstErr != nil {
		return nil, "", firstErr
	}
	logf(ctx, "azure: no provisioning CD (%s on a CD-ROM): customData not read", azureOVFEnv)
	return nil, "", nil
}

// cds waits, as long as Drives waits, for CD-ROMs holding a UDF or ISO
// 9660 filesystem, and returns them.
func (a Azure) cds(ctx context.Context) ([]Drive, error) {
	deadline := a.Drives.deadline(ctx)
	for {
		cds, err := a.Drives.scan(azureCD)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		if len(cds) > 0 || !time.Now().Before(deadline) || !a.Drives.disksMayAppear() {
			return cds, nil
		}
		if err := sleep(ctx, drivePoll); err != nil {
			return nil, err
		}
	}
}

// azureCD matches a CD-ROM with a UDF (mounted as such, also when it is a
// UDF bridge that has ISO 9660 too) or ISO 9660 filesystem.
func azureCD(name string, r io.ReaderAt) (Probed, bool) {
	if !strings.HasPrefix(name, "sr") {
		return Probed{}, false
	}
	if isUDF(r) {
		return Probed{Type: FSUDF, ID: name}, true
	}
	p, ok := Probe(r)
	return p, ok && p.Type == FSISO9660
}

// isUDF reads the volume recognition sequence (2048-byte descriptors from
// byte 32768, ECMA-167 2/8.3): UDF has an NSR02 or NSR03 descriptor there.
func isUDF(r io.ReaderAt) bool {
	b := make([]byte, 7)
	for i := int64(16); i < 32; i++ {
		if _, err := r.ReadAt(b, i*isoSector); err != nil {
			return false
		}
		switch string(b[1:6]) {
		case "NSR02", "NSR03":
			return true
		case "BEA01", "CD001", "BOOT2", "CDW02", "TEA01":
		default:
			return false
		}
	}
	return false
}

// parseOVFEnv returns the customData (base64-decoded; nil for none) and
// the hostname of an ovf-env.xml. The file also holds the admin's
// credentials: nothing of it is logged or kept.
func parseOVFEnv(doc []byte) (custom []byte, hostname string, err error) {
	s := string(doc)
	if _, ok := xmlText(s, "ProvisioningSection"); !ok {
		return nil, "", fmt.Errorf("%s has no ProvisioningSection", azureOVFEnv)
	}
	hostname, _ = xmlText(s, "HostName")
	text, ok := xmlText(s, "CustomData")
	if !ok {
		text, _ = xmlText(s, "UserData")
	}
	text = strings.Join(strings.Fields(text), "")
	if text == "" {
		return nil, strings.TrimSpace(hostname), nil
	}
	custom, err = base64.StdEncoding.DecodeString(text)
	if err != nil {
		return nil, "", fmt.Errorf("%s: CustomData is not base64", azureOVFEnv)
	}
	return custom, strings.TrimSpace(hostname), nil
}

var xmlUnescape = strings.NewReplacer("&lt;", "<", "&gt;", ">", "&quot;", `"`, "&apos;", "'", "&amp;", "&")

// xmlText returns the text of the first element whose local name is name,
// whatever its namespace prefix, and whether there is one: enough for
// ovf-env.xml, whose elements of interest hold text only (encoding/xml
// would cost the init more than all of this).
func xmlText(doc, name string) (string, bool) {
	for i := 0; ; {
		j := strings.IndexByte(doc[i:], '<')
		if j < 0 {
			return "", false
		}
		i += j + 1
		k := strings.IndexAny(doc[i:], " \t\r\n/>")
		if k <= 0 {
			continue // a closing tag, or the end
		}
		tag := doc[i : i+k]
		local := tag
		if c := strings.LastIndexByte(tag, ':'); c >= 0 {
			local = tag[c+1:]
		}
		if local != name {
			continue
		}
		end := strings.IndexByte(doc[i:], '>')
		if end < 0 {
			return "", false
		}
		if doc[i+end-1] == '/' {
			return "", true // <name/>
		}
		start := i + end + 1
		stop := strings.Index(doc[start:], "</"+tag)
		if stop < 0 {
			return "", false
		}
		text := doc[start : start+stop]
		if t := strings.TrimSpace(text); strings.HasPrefix(t, "<![CDATA[") && strings.HasSuffix(t, "]]>") {
			return t[len("<![CDATA[") : len(t)-len("]]>")], true
		}
		return xmlUnescape.Replace(text), true
	}
}
