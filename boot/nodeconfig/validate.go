package nodeconfig

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/slate-os/slate/internal/clip"
	"github.com/slate-os/slate/internal/strictyaml"
)

// Where Apply writes what the config's fields generate (node paths).
const (
	pathHostname       = "/etc/hostname"
	pathLocaltime      = "/etc/localtime"
	pathTimezone       = "/etc/timezone"
	unitDir            = "/etc/systemd/system"
	networkDir         = "/etc/systemd/network"
	pathSysctl         = "/etc/sysctl.d/90-slate.conf"
	pathModules        = "/etc/modules-load.d/slate.conf"
	pathShadow         = "/etc/shadow"
	pathPasswd         = "/etc/passwd"
	pathGroup          = "/etc/group"
	pathAuthorizedKeys = "/etc/ssh/authorized_keys.d/root"
	pathSSHDConfig     = "/etc/ssh/sshd_config.d/60-slate-breakglass.conf"
	zoneinfoDir        = "/usr/share/zoneinfo"
)

// Defaults.
const (
	DefaultFileMode Mode = 0o644
	DefaultDirMode  Mode = 0o755
)

func fe(path, format string, a ...any) error {
	return &strictyaml.FieldError{Path: path, Msg: fmt.Sprintf(format, a...)}
}

// q quotes a value from the document for an error: at most
// clip.QuoteMax bytes of it, saying how much more there is.
func q(s string) string { return clip.Quote(s) }

func idx(prefix string, i int) string { return prefix + "[" + strconv.Itoa(i) + "]" }

// Validate checks every field that can be checked without the target tree.
// Parse runs it; Apply runs it again, for a Config built in Go.
func (c *Config) Validate() error {
	switch c.APIVersion {
	case APIVersion:
	case "":
		return fe("apiVersion", "missing: want %q", APIVersion)
	default:
		return fe("apiVersion", "got %s, want %q", q(c.APIVersion), APIVersion)
	}
	switch c.Kind {
	case Kind:
	case "":
		return fe("kind", "missing: want %q", Kind)
	default:
		return fe("kind", "got %s, want %q", q(c.Kind), Kind)
	}
	if c.Hostname != "" {
		if err := checkHostname(c.Hostname); err != nil {
			return fe("hostname", "%v", err)
		}
	}
	if c.Timezone != "" {
		if err := checkTimezone(c.Timezone); err != nil {
			return fe("timezone", "%v", err)
		}
	}
	for i, f := range c.Files {
		p := idx("files", i)
		if err := checkNodePath(f.Path); err != nil {
			return fe(p+".path", "%v", err)
		}
		if f.Mode != nil && *f.Mode > 0o7777 {
			return fe(p+".mode", "%o is more than 07777", uint32(*f.Mode))
		}
		if f.Owner != "" {
			if _, err := parseOwner(f.Owner); err != nil {
				return fe(p+".owner", "%v", err)
			}
		}
		if f.Contents != nil {
			if err := f.Contents.check(p + ".contents"); err != nil {
				return err
			}
		}
	}
	for i, d := range c.Directories {
		p := idx("directories", i)
		if err := checkNodePath(d.Path); err != nil {
			return fe(p+".path", "%v", err)
		}
		if d.Mode != nil && *d.Mode > 0o7777 {
			return fe(p+".mode", "%o is more than 07777", uint32(*d.Mode))
		}
		if d.Owner != "" {
			if _, err := parseOwner(d.Owner); err != nil {
				return fe(p+".owner", "%v", err)
			}
		}
	}
	for i, l := range c.Links {
		p := idx("links", i)
		if err := checkNodePath(l.Path); err != nil {
			return fe(p+".path", "%v", err)
		}
		switch {
		case l.Target == "":
			return fe(p+".target", "missing")
		case len(l.Target) > 4095:
			return fe(p+".target", "longer than 4095 bytes")
		case !utf8.ValidString(l.Target) || hasControl(l.Target):
			return fe(p+".target", "%s contains a control character or is not UTF-8", q(l.Target))
		}
	}
	if err := c.checkPrivileged(); err != nil { // privileged.go
		return err
	}
	if err := c.validateUnits(); err != nil {
		return err
	}
	if err := c.validateSysctl(); err != nil {
		return err
	}
	seenMod := map[string]int{}
	for i, m := range c.KernelModules {
		p := idx("kernelModules", i)
		if !moduleRe.MatchString(m) {
			return fe(p, "%s is not a module name (letters, digits, - and _, at most 55)", q(m))
		}
		k := strings.ReplaceAll(m, "-", "_")
		if j, ok := seenMod[k]; ok {
			return fe(p, "%s is also kernelModules[%d]", m, j)
		}
		seenMod[k] = i
	}
	seenNet := map[string]int{}
	for i, n := range c.Network {
		p := idx("network", i)
		if err := checkFileName(n.Name, ".network", ".netdev", ".link"); err != nil {
			return fe(p+".name", "%v", err)
		}
		if j, ok := seenNet[n.Name]; ok {
			return fe(p+".name", "%s is also network[%d]", n.Name, j)
		}
		seenNet[n.Name] = i
		entries, err := parseINI(n.Contents)
		if err != nil {
			return fe(p+".contents", "%v", err)
		}
		if len(entries) == 0 {
			return fe(p+".contents", "has no settings (to hide an image's file, add a link to /dev/null in links)")
		}
	}
	seenExt := map[string]int{}
	for i, e := range c.Extensions {
		p := idx("extensions", i)
		if !IsExtensionRef(e) && (!extensionRe.MatchString(e) || strings.Contains(e, "..")) {
			return fe(p, "%s is neither an extension name (letters, digits and _ . + -, starting with a letter or digit) nor a registry reference (registry.example/extensions/tools:1.0, or @sha256:...)", q(e))
		}
		if j, ok := seenExt[e]; ok {
			return fe(p, "%s is also extensions[%d]", e, j)
		}
		seenExt[e] = i
	}
	if err := c.Update.check(); err != nil {
		return err
	}
	if err := c.Health.check(); err != nil {
		return err
	}
	if err := c.Access.check(); err != nil {
		return err
	}
	if err := c.Logging.check(); err != nil {
		return err
	}
	if err := c.Metrics.check(); err != nil {
		return err
	}
	return checkConflicts(c.entries())
}

var (
	moduleRe    = regexp.MustCompile(`^[A-Za-z0-9_-]{1,55}$`)
	extensionRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$`)
	// A registry reference as the distribution spec's grammar has it: a
	// domain with a dot or port (or localhost), a lowercase path, and a
	// tag, a digest or both.
	extensionRefRe = regexp.MustCompile(`^(localhost|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+|[A-Za-z0-9.-]+:[0-9]+|localhost:[0-9]+|\[[0-9a-fA-F:]+\](:[0-9]+)?)` +
		`(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)+(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(@sha256:[0-9a-f]{64})?$`)
	labelRe  = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	tzPartRe = regexp.MustCompile(`^[A-Za-z0-9_+-][A-Za-z0-9_+.-]*$`)
	userRe   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,30}\$?$`)
	cryptRe  = regexp.MustCompile(`^\$(y|gy|7|2a|2b|2y|5|6)\$[./0-9A-Za-z$,=]*[./0-9A-Za-z]$`)
	sysctlRe = regexp.MustCompile(`^-?[A-Za-z0-9_*][A-Za-z0-9_*:@+-]*([./][A-Za-z0-9_*:@+-]+)+$`)

	// OCI references, after the distribution/reference grammar.
	ociRef = func() *regexp.Regexp {
		const (
			alnum   = `[a-z0-9]+`
			sep     = `(?:[._]|__|[-]+)`
			comp    = alnum + `(?:` + sep + alnum + `)*`
			dcomp   = `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`
			host    = `(?:` + dcomp + `(?:\.` + dcomp + `)*|\[[a-fA-F0-9:]+\])`
			domain  = host + `(?::[0-9]+)?`
			name    = `(?:` + domain + `/)?` + comp + `(?:/` + comp + `)*`
			tag     = `[\w][\w.-]{0,127}`
			digest_ = `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`
		)
		return regexp.MustCompile(`^(` + name + `)(?::` + tag + `)?(?:@` + digest_ + `)?$`)
	}()
)

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

// checkHostname accepts RFC 1123 labels joined by dots, at most 64 in all.
func checkHostname(h string) error {
	if len(h) > 64 {
		return fmt.Errorf("%s is longer than 64 characters", q(h))
	}
	for _, l := range strings.Split(h, ".") {
		if !labelRe.MatchString(l) {
			return fmt.Errorf("%s is not a hostname: each dot-separated label is 1-63 letters, digits or -, not starting or ending with -", q(h))
		}
	}
	return nil
}

func checkTimezone(tz string) error {
	if len(tz) > 255 {
		return fmt.Errorf("%s is too long", q(tz))
	}
	for _, p := range strings.Split(tz, "/") {
		if p == "" || p == "." || p == ".." || !tzPartRe.MatchString(p) {
			return fmt.Errorf("%s is not a time zone name like Europe/Paris or UTC", q(tz))
		}
	}
	return nil
}

// checkNodePath enforces the rules for a path the config writes: absolute,
// clean, no "..", strictly below /etc or /run, not in /run/slate.
func checkNodePath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("missing")
	case !utf8.ValidString(p):
		return fmt.Errorf("%s is not valid UTF-8", q(p))
	case hasControl(p):
		return fmt.Errorf("%s contains a control character", q(p))
	case len(p) > 4095:
		return fmt.Errorf("%s is longer than 4095 bytes", q(p))
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("%s is relative: give an absolute path under /etc or /run", p)
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return fmt.Errorf("%s contains \"..\"", p)
		}
		if len(c) > 255 {
			return fmt.Errorf("%s has a name longer than 255 bytes", p)
		}
	}
	if clean := path.Clean(p); clean != p {
		return fmt.Errorf("%s is not clean: write %s", p, clean)
	}
	if p == "/etc" || p == "/run" {
		return fmt.Errorf("%s itself cannot be written: give a path below it", p)
	}
	if !inBounds(p) {
		return fmt.Errorf("%s is outside /etc and /run", p)
	}
	if p == "/run/slate" || strings.HasPrefix(p, "/run/slate/") {
		return fmt.Errorf("%s is inside /run/slate, which is reserved for slate's own records", p)
	}
	for _, d := range []string{"/run/extensions", "/etc/extensions"} {
		if p == d || strings.HasPrefix(p, d+"/") {
			return fmt.Errorf("%s is inside %s, where only verified extensions go: name the extension in extensions", p, d)
		}
	}
	return nil
}

// inBounds reports whether a node path is /etc, /run or below them.
func inBounds(p string) bool {
	return p == "/etc" || p == "/run" || strings.HasPrefix(p, "/etc/") || strings.HasPrefix(p, "/run/")
}

// owner is a parsed USER[:GROUP]; an id is -1 where a name was given.
type owner struct {
	user, group string
	uid, gid    int64
	hasGroup    bool
}

const maxID = 4294967294 // (uid_t)-1 is "no change"

func parseOwner(s string) (owner, error) {
	u, g, hasGroup := strings.Cut(s, ":")
	o := owner{user: u, group: g, uid: -1, gid: -1, hasGroup: hasGroup}
	parse := func(what, v string, id *int64) error {
		if isDigits(v) {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil || n > maxID {
				return fmt.Errorf("%s: %s id %s is out of range (0-%d)", q(s), what, clip.String(v, clip.QuoteMax), maxID)
			}
			*id = int64(n)
			return nil
		}
		if !userRe.MatchString(v) {
			return fmt.Errorf("%s is not USER[:GROUP]: %s %s is neither a name nor a numeric id", q(s), what, q(v))
		}
		return nil
	}
	if err := parse("user", u, &o.uid); err != nil {
		return o, err
	}
	if hasGroup {
		if err := parse("group", g, &o.gid); err != nil {
			return o, err
		}
	}
	return o, nil
}

func (c *Contents) check(p string) error {
	switch {
	case c.Text == nil && c.Base64 == nil:
		return fe(p, "give text or base64")
	case c.Text != nil && c.Base64 != nil:
		return fe(p, "give text or base64, not both")
	case c.Text != nil && !utf8.ValidString(*c.Text):
		return fe(p+".text", "is not valid UTF-8: use base64")
	case c.Base64 != nil:
		if _, err := decodeBase64(*c.Base64); err != nil {
			return fe(p+".base64", "%v", err)
		}
	}
	return nil
}

// Data is the decoded contents; nil Contents is an empty file.
func (c *Contents) Data() ([]byte, error) {
	switch {
	case c == nil:
		return []byte{}, nil
	case c.Text != nil:
		return []byte(*c.Text), nil
	case c.Base64 != nil:
		return decodeBase64(*c.Base64)
	}
	return []byte{}, nil
}

func decodeBase64(s string) ([]byte, error) {
	clean := strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\n' || r == '\r' {
			return -1
		}
		return r
	}, s)
	b, err := base64.StdEncoding.DecodeString(clean)
	if err != nil {
		return nil, fmt.Errorf("not standard base64 (with padding): %v", err)
	}
	return b, nil
}

func (c *Config) validateUnits() error {
	seen := map[string]int{}
	for i, u := range c.Systemd.Units {
		p := idx("systemd.units", i)
		name, err := parseUnitName(u.Name)
		if err != nil {
			return fe(p+".name", "%v", err)
		}
		if j, ok := seen[u.Name]; ok {
			return fe(p+".name", "%s is also systemd.units[%d]", u.Name, j)
		}
		seen[u.Name] = i
		enable := u.Enabled != nil && *u.Enabled
		if u.Masked {
			switch {
			case u.Contents != "":
				return fe(p+".masked", "a masked unit cannot have contents")
			case len(u.Dropins) > 0:
				return fe(p+".masked", "a masked unit cannot have drop-ins")
			case enable:
				return fe(p+".masked", "a masked unit cannot be enabled")
			}
		}
		if u.Contents == "" && len(u.Dropins) == 0 && u.Enabled == nil && !u.Masked {
			return fe(p, "%s: nothing to do: give contents, dropins, enabled or masked", u.Name)
		}
		if u.Contents != "" {
			if _, err := parseINI(u.Contents); err != nil {
				return fe(p+".contents", "%v", err)
			}
			if enable {
				in, err := parseInstall(u.Contents, name)
				if err != nil {
					return fe(p+".contents", "[Install]: %v", err)
				}
				if err := enableable(u.Name, name, in); err != nil {
					return fe(p+".enabled", "%v", err)
				}
			}
		}
		seenDrop := map[string]int{}
		for j, d := range u.Dropins {
			dp := idx(p+".dropins", j)
			if err := checkFileName(d.Name, ".conf"); err != nil {
				return fe(dp+".name", "%v", err)
			}
			if k, ok := seenDrop[d.Name]; ok {
				return fe(dp+".name", "%s is also %s", d.Name, idx(p+".dropins", k))
			}
			seenDrop[d.Name] = j
			if _, err := parseINI(d.Contents); err != nil {
				return fe(dp+".contents", "%v", err)
			}
		}
	}
	return nil
}

// enableable says why a unit with this [Install] section cannot be enabled.
func enableable(s string, name unitName, in install) error {
	if name.template() && in.defaultInstance == "" {
		return fmt.Errorf("%s is a template: enable an instance (%s) or give DefaultInstance= in its [Install] section",
			s, name.prefix+"@NAME."+name.typ)
	}
	if in.empty() {
		return fmt.Errorf("%s has no WantedBy=, RequiredBy=, UpheldBy=, Alias= or Also= in an [Install] section, so there is nothing to enable", s)
	}
	return nil
}

// sysctlKey is the key as systemd-sysctl normalizes it: "/" separators.
func sysctlKey(k string) string {
	k = strings.TrimPrefix(k, "-")
	i := strings.IndexAny(k, "./")
	if i >= 0 && k[i] == '.' {
		k = strings.Map(func(r rune) rune {
			switch r {
			case '.':
				return '/'
			case '/':
				return '.'
			}
			return r
		}, k)
	}
	return k
}

func (c *Config) validateSysctl() error {
	seen := map[string]string{}
	keys := make([]string, 0, len(c.Sysctl))
	for k := range c.Sysctl {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := "sysctl." + k
		if !sysctlRe.MatchString(k) || strings.Contains(k, "..") || strings.Contains(k, "//") {
			return fe(p, "%s is not a sysctl key like net.ipv4.ip_forward", q(k))
		}
		n := sysctlKey(k)
		if prev, ok := seen[n]; ok {
			return fe(p, "%s is the same setting as %s", k, prev)
		}
		seen[n] = k
		v := string(c.Sysctl[k])
		switch {
		case strings.TrimSpace(v) == "":
			return fe(p, "empty value")
		case !utf8.ValidString(v) || hasControl(v):
			return fe(p, "%s: a value is one line of text", q(v))
		}
	}
	return nil
}

func (u *Update) check() error {
	if u.Source != "" {
		if len(u.Source) > 512 || !ociRef.MatchString(u.Source) {
			return fe("update.source", "%q is not an OCI reference like registry.example/org/node:1.4", u.Source)
		}
		name := ociRef.FindStringSubmatch(u.Source)[1]
		if len(name) > 255 {
			return fe("update.source", "the repository name is longer than 255 characters")
		}
	}
	if u.PublicKey != "" {
		if err := checkPublicKey(u.PublicKey); err != nil {
			return fe("update.publicKey", "%v", err)
		}
	}
	for i, k := range u.PublicKeys {
		if err := checkPublicKey(k); err != nil {
			return fe(idx("update.publicKeys", i), "%v", err)
		}
	}
	return nil
}

// PKIX encodings of the two key types slate verifies differ only after a
// fixed prefix (the algorithm and, for ECDSA, the curve and an uncompressed
// point), so the init checks keys without an ASN.1 or x509 parser; the
// agent parses them fully (signature). TestCheckPublicKey pins
// these bytes against crypto/x509.
var (
	pkixP256Prefix    = []byte{0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04}
	pkixEd25519Prefix = []byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}
)

const (
	pkixP256Len    = 91
	pkixEd25519Len = 44
)

// checkPublicKey accepts one PEM "PUBLIC KEY" block or its base64: a PKIX
// ECDSA P-256 or Ed25519 key, what update artifacts are signed with.
func checkPublicKey(k string) error {
	t := strings.TrimSpace(k)
	var der []byte
	if strings.HasPrefix(t, "-----BEGIN ") {
		b, rest := pem.Decode([]byte(t))
		switch {
		case b == nil:
			return fmt.Errorf("not a valid PEM block")
		case strings.TrimSpace(string(rest)) != "":
			return fmt.Errorf("more than one PEM block, or text after it")
		case strings.Contains(b.Type, "PRIVATE"):
			return fmt.Errorf("this is a private key: give the public key")
		case b.Type != "PUBLIC KEY":
			return fmt.Errorf("a PEM %q block: want \"PUBLIC KEY\"", b.Type)
		}
		der = b.Bytes
	} else {
		var err error
		if der, err = decodeBase64(t); err != nil {
			return fmt.Errorf("neither a PEM block nor base64: %v", err)
		}
	}
	switch {
	case len(der) == pkixP256Len && bytes.HasPrefix(der, pkixP256Prefix),
		len(der) == pkixEd25519Len && bytes.HasPrefix(der, pkixEd25519Prefix):
		return nil
	}
	return fmt.Errorf("not an ECDSA P-256 or Ed25519 public key in PKIX form (%d bytes): slate verifies those two, as made by `slate keygen`, cosign or `openssl pkey -pubout`", len(der))
}

func (h *Health) check() error {
	seen := map[string]int{}
	for i, u := range h.RequiredUnits {
		p := idx("health.requiredUnits", i)
		name, err := parseUnitName(u)
		if err != nil {
			return fe(p, "%v", err)
		}
		if name.template() {
			return fe(p, "%s is a template, which is never active: name an instance", u)
		}
		if j, ok := seen[u]; ok {
			return fe(p, "%s is also health.requiredUnits[%d]", u, j)
		}
		seen[u] = i
	}
	seenExt := map[string]int{}
	for i, e := range h.RequiredExtensions {
		p := idx("health.requiredExtensions", i)
		if !extensionRe.MatchString(e) || strings.Contains(e, "..") {
			return fe(p, "%s is not an extension name (the name in its extension-release, not a reference)", q(e))
		}
		if j, ok := seenExt[e]; ok {
			return fe(p, "%s is also health.requiredExtensions[%d]", e, j)
		}
		seenExt[e] = i
	}
	if h.Timeout < 0 {
		return fe("health.timeout", "%s is negative", h.Timeout)
	}
	return nil
}

var sshKeyTypes = map[string]bool{
	"ssh-ed25519": true, "ssh-rsa": true,
	"ecdsa-sha2-nistp256": true, "ecdsa-sha2-nistp384": true, "ecdsa-sha2-nistp521": true,
	"sk-ssh-ed25519@openssh.com": true, "sk-ecdsa-sha2-nistp256@openssh.com": true,
}

// checkSSHKey accepts an authorized_keys line: [options] TYPE BASE64 [comment].
func checkSSHKey(s string) error {
	if strings.ContainsAny(s, "\r\n\x00") {
		return fmt.Errorf("one key per list item, on one line")
	}
	fields := strings.Fields(s)
	for i := 0; i+1 < len(fields); i++ {
		if !sshKeyTypes[fields[i]] {
			continue
		}
		blob, err := base64.StdEncoding.DecodeString(fields[i+1])
		if err == nil && len(blob) > 4 {
			n := binary.BigEndian.Uint32(blob)
			if uint64(n) <= uint64(len(blob)-4) && string(blob[4:4+n]) == fields[i] {
				return nil
			}
		}
		return fmt.Errorf("the key data after %s is not a %s key", fields[i], fields[i])
	}
	return fmt.Errorf("not an OpenSSH public key line (TYPE BASE64 [COMMENT], e.g. ssh-ed25519 AAAA... admin@example; types: ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521, sk-*)")
}

func (a *Access) check() error {
	if !a.BreakGlass {
		if a.RootPasswordHash != "" {
			return fe("access.rootPasswordHash", "needs access.breakGlass: true")
		}
		if len(a.SSHAuthorizedKeys) > 0 {
			return fe("access.sshAuthorizedKeys", "needs access.breakGlass: true")
		}
	}
	if h := a.RootPasswordHash; h != "" {
		switch {
		case strings.HasPrefix(h, "$1$") || !strings.HasPrefix(h, "$") && len(h) == 13:
			return fe("access.rootPasswordHash", "MD5 and DES hashes are too weak: make one with mkpasswd -m yescrypt (or -m sha-512)")
		case !cryptRe.MatchString(h) || len(h) < 20:
			return fe("access.rootPasswordHash", "not a crypt(3) hash ($y$, $gy$, $7$, $2b$, $6$ or $5$): make one with mkpasswd -m yescrypt; a plain password is never accepted")
		}
	}
	for i, k := range a.SSHAuthorizedKeys {
		if err := checkSSHKey(k); err != nil {
			return fe(idx("access.sshAuthorizedKeys", i), "%v", err)
		}
	}
	if a.Expires != nil && !a.BreakGlass {
		return fe("access.expires", "needs access.breakGlass: true")
	}
	switch a.AfterExpiry {
	case "":
	case AfterExpiryReboot, AfterExpiryPoweroff:
		if a.Expires == nil {
			return fe("access.afterExpiry", "needs access.expires")
		}
	default:
		return fe("access.afterExpiry", "got %s, want %q or %q", q(a.AfterExpiry), AfterExpiryReboot, AfterExpiryPoweroff)
	}
	return nil
}

func (l *Logging) check() error {
	if l.Collector == "" {
		if l.CA != "" || l.ClientCertificate != "" || l.ClientKey != "" || l.ServerName != "" {
			return fe("logging.collector", "missing: the other logging fields need a collector (tls://HOST:PORT)")
		}
		return nil
	}
	scheme, hostport, ok := strings.Cut(l.Collector, "://")
	if !ok || (scheme != "tls" && scheme != "tcp") || !hostPortRe.MatchString(hostport) {
		return fe("logging.collector", "%s is not tls://HOST:PORT or tcp://HOST:PORT", q(l.Collector))
	}
	if scheme == "tcp" && (l.CA != "" || l.ClientCertificate != "" || l.ClientKey != "") {
		return fe("logging.collector", "%s is plain TCP, but the config gives TLS settings: write tls://", q(l.Collector))
	}
	if l.CA != "" {
		if err := checkPEM(l.CA, "CERTIFICATE"); err != nil {
			return fe("logging.ca", "%v", err)
		}
	}
	if (l.ClientCertificate == "") != (l.ClientKey == "") {
		return fe("logging.clientKey", "clientCertificate and clientKey go together")
	}
	if l.ClientCertificate != "" {
		if err := checkPEM(l.ClientCertificate, "CERTIFICATE"); err != nil {
			return fe("logging.clientCertificate", "%v", err)
		}
		if err := checkPEM(l.ClientKey, "PRIVATE KEY"); err != nil {
			return fe("logging.clientKey", "%v", err)
		}
	}
	return nil
}

// hostPortRe is HOST:PORT: a DNS name, an IPv4 address or a bracketed
// IPv6 address (the agent resolves and dials it; this only catches typos).
var hostPortRe = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):([1-9][0-9]{0,4})$`)

// checkPEM checks that s is PEM blocks of the given type (a suffix:
// "PRIVATE KEY" takes "EC PRIVATE KEY" too); the agent parses them.
func checkPEM(s, typ string) error {
	rest := []byte(s)
	n := 0
	for {
		b, r := pem.Decode(rest)
		if b == nil {
			break
		}
		if !strings.HasSuffix(b.Type, typ) {
			return fmt.Errorf("a PEM block of type %s, want %s", q(b.Type), typ)
		}
		n++
		rest = r
	}
	if n == 0 || len(bytes.TrimSpace(rest)) > 0 {
		return fmt.Errorf("not PEM (-----BEGIN %s-----)", typ)
	}
	return nil
}

func (m *Metrics) check() error {
	if m.Listen != "" {
		host, port, ok := strings.Cut(m.Listen, ":")
		if strings.HasPrefix(m.Listen, "[") {
			i := strings.LastIndex(m.Listen, "]:")
			host, port, ok = m.Listen[:i+1], m.Listen[i+2:], i > 0
		}
		if !ok || (host != "" && !hostPortRe.MatchString(host+":1")) || !regexp.MustCompile(`^[1-9][0-9]{0,4}$`).MatchString(port) {
			return fe("metrics.listen", "%s is not HOST:PORT or :PORT", q(m.Listen))
		}
	}
	if t := m.Textfile; t != "" {
		if path.Clean(t) != t || !strings.HasSuffix(t, ".prom") || !(strings.HasPrefix(t, "/var/") || strings.HasPrefix(t, "/run/")) {
			return fe("metrics.textfile", "%s is not a clean absolute path under /var or /run ending in .prom", q(t))
		}
	}
	return nil
}

// entry is one path the config writes, for conflict checks.
type entry struct {
	path  string
	kind  entryKind
	field string
}

type entryKind int

const (
	kindFile entryKind = iota
	kindDir
	kindLink
	kindRemove
)

func (k entryKind) String() string {
	return [...]string{"a file", "a directory", "a symlink", "a removal"}[k]
}

// entries lists the paths a config writes that are known without the tree:
// generated ones first, so that a clash is reported on the user's entry.
func (c *Config) entries() []entry {
	var es []entry
	add := func(p string, k entryKind, field string) { es = append(es, entry{p, k, field}) }
	if c.Hostname != "" {
		add(pathHostname, kindFile, "hostname")
	}
	if c.Timezone != "" {
		add(pathLocaltime, kindLink, "timezone")
		add(pathTimezone, kindFile, "timezone")
	}
	for i, u := range c.Systemd.Units {
		p := idx("systemd.units", i)
		switch {
		case u.Masked:
			add(unitDir+"/"+u.Name, kindLink, p+".masked")
		case u.Contents != "":
			add(unitDir+"/"+u.Name, kindFile, p+".contents")
		}
		for j, d := range u.Dropins {
			add(unitDir+"/"+u.Name+".d/"+d.Name, kindFile, idx(p+".dropins", j)+".name")
		}
	}
	if len(c.Sysctl) > 0 {
		add(pathSysctl, kindFile, "sysctl")
	}
	if len(c.KernelModules) > 0 {
		add(pathModules, kindFile, "kernelModules")
	}
	for i, n := range c.Network {
		add(networkDir+"/"+n.Name, kindFile, idx("network", i)+".name")
	}
	if c.Access.RootPasswordHash != "" {
		add(pathShadow, kindFile, "access.rootPasswordHash")
	}
	if len(c.Access.SSHAuthorizedKeys) > 0 {
		add(pathAuthorizedKeys, kindFile, "access.sshAuthorizedKeys")
		add(pathSSHDConfig, kindFile, "access.sshAuthorizedKeys")
	}
	for i, d := range c.Directories {
		add(d.Path, kindDir, idx("directories", i)+".path")
	}
	for i, f := range c.Files {
		add(f.Path, kindFile, idx("files", i)+".path")
	}
	for i, l := range c.Links {
		add(l.Path, kindLink, idx("links", i)+".path")
	}
	return es
}

// checkConflicts refuses two entries for one path (two directories are
// fine) and a path below one that is not a directory.
func checkConflicts(es []entry) error {
	seen := make(map[string]entry, len(es))
	for _, e := range es {
		if prev, ok := seen[e.path]; ok {
			if prev.kind == kindDir && e.kind == kindDir {
				continue
			}
			return fe(e.field, "%s is also written by %s", e.path, prev.field)
		}
		seen[e.path] = e
	}
	for _, e := range es {
		for d := path.Dir(e.path); d != "/" && d != "."; d = path.Dir(d) {
			if prev, ok := seen[d]; ok && prev.kind != kindDir {
				if prev.kind == kindRemove {
					return fe(e.field, "%s is below %s, which %s removes", e.path, d, prev.field)
				}
				return fe(e.field, "%s is below %s, which %s makes %s", e.path, d, prev.field, prev.kind)
			}
		}
	}
	return nil
}

// IsExtensionRef says whether an extensions entry is a registry reference
// (fetched by the agent) rather than the name of an extension the node
// already has (one the image carries, or one fetched before). A reference
// has a registry domain and a path: registry.example/extensions/tools:1.0.
func IsExtensionRef(e string) bool {
	return len(e) <= 1024 && extensionRefRe.MatchString(e)
}
