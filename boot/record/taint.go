package record

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/slate-os/slate/internal/fsync"
)

// Taint marks a node that booted with a node config that used
// access.breakGlass (emergency access: a root password, SSH keys, sudoers,
// PAM, ...). The init writes it to TaintFile, on the state partition,
// before such a config's first write, and it stays there until the node is
// re-imaged: a later boot with a clean config does not clear it. `slate
// status` shows it.
type Taint struct {
	// Since is the first boot with such a config, by the machine's clock;
	// ConfigSHA256 and Source are that config's.
	Since        time.Time `json:"since"`
	ConfigSHA256 string    `json:"config_sha256"`
	Source       string    `json:"source,omitempty"`
	// Last and LastConfigSHA256 are the newest such boot's; Boots counts
	// them.
	Last             time.Time `json:"last"`
	LastConfigSHA256 string    `json:"last_config_sha256"`
	Boots            int       `json:"boots"`
	// Logins are the interactive logins seen on the node (the agent's
	// slate-access.service, from wtmp), oldest first, the newest
	// MaxLogins kept; LoginsTotal counts them all. A login taints a node
	// whatever its config: Since is then the first login's time when no
	// config tainted it before.
	Logins      []Login `json:"logins,omitempty"`
	LoginsTotal int     `json:"logins_total,omitempty"`
}

// Login is one interactive login: who, when and how.
type Login struct {
	Time time.Time `json:"time"`
	User string    `json:"user"`
	// TTY is the terminal (ttyS0, tty1, pts/0).
	TTY string `json:"tty"`
	// Host is the remote host of an SSH login; empty on a console.
	Host string `json:"host,omitempty"`
	// Via says how: "serial console", "console", "ssh" (a remote
	// pseudo-terminal), "pseudo-terminal".
	Via string `json:"via"`
	// Boot is the boot id of the boot the login happened in.
	Boot string `json:"boot,omitempty"`
}

// MaxLogins bounds the logins a taint record keeps.
const MaxLogins = 100

func (l Login) String() string {
	s := fmt.Sprintf("%s on %s (%s)", l.User, l.TTY, l.Via)
	if l.Host != "" {
		s += " from " + l.Host
	}
	return s + " at " + l.Time.UTC().Format("2006-01-02 15:04:05Z")
}

// AddLogins records logins at path (durably, as MarkTainted does),
// tainting a node that was not. It returns the taint as written.
func AddLogins(path string, logins ...Login) (*Taint, error) {
	t, _ := ReadTaint(path)
	if t == nil {
		t = &Taint{}
	}
	if t.Since.IsZero() && len(logins) > 0 {
		t.Since = logins[0].Time
	}
	t.Logins = append(t.Logins, logins...)
	t.LoginsTotal += len(logins)
	if n := len(t.Logins); n > MaxLogins {
		t.Logins = t.Logins[n-MaxLogins:]
	}
	return t, writeTaint(path, t)
}

func writeTaint(path string, t *Taint) error { return fsync.WriteJSON(path, t) }

// Where the taint is kept.
const (
	// TaintFile is its path on the node; the state partition is /var.
	TaintFile = "/var/lib/slate/" + TaintFileName
	// TaintFileName is its name under the agent's /var/lib/slate.
	TaintFileName = "tainted"
)

// ReadTaint reads the taint kept at path; nil, nil when there is none.
func ReadTaint(path string) (*Taint, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var t Taint
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &t, nil
}

// MarkTainted records at path (durably: written, fsynced, renamed,
// directory fsynced) that a config with the digest sha256, from source,
// used breakGlass at time at. A node already tainted keeps its Since and
// first config; an unreadable record is replaced, as a node tainted now.
// It returns the taint as written.
func MarkTainted(path string, at time.Time, sha256, source string) (*Taint, error) {
	t, _ := ReadTaint(path)
	if t == nil {
		t = &Taint{Since: at}
	}
	if t.ConfigSHA256 == "" {
		t.ConfigSHA256, t.Source = sha256, source
	}
	t.Last, t.LastConfigSHA256 = at, sha256
	t.Boots++
	if err := writeTaint(path, t); err != nil {
		return nil, err
	}
	return t, nil
}

// String is the taint on one line: "since 2026-01-02 03:04:05Z, by config
// sha256:0123456789ab… from fw_cfg".
func (t Taint) String() string {
	s := "since " + t.Since.UTC().Format("2006-01-02 15:04:05Z")
	if t.ConfigSHA256 != "" {
		s += ", by config sha256:" + shortHash(t.ConfigSHA256)
		if t.Source != "" {
			s += " from " + t.Source
		}
	}
	if t.Boots > 1 && t.LastConfigSHA256 != "" {
		s += fmt.Sprintf("; %d boots with breakGlass, the last %s (config sha256:%s)", t.Boots,
			t.Last.UTC().Format("2006-01-02 15:04:05Z"), shortHash(t.LastConfigSHA256))
	}
	if n := t.LoginsTotal; n > 0 {
		s += fmt.Sprintf("; %d interactive login(s), the last %s", n, t.Logins[len(t.Logins)-1])
	}
	return s
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12] + "…"
	}
	return h
}
