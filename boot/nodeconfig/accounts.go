package nodeconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"
)

// accounts are the image's users and groups, from its /etc/passwd and
// /etc/group, read only when an owner names one.
type accounts struct {
	t            tree
	loaded       bool
	passwdErr    error
	groupErr     error
	users        map[string][2]int64 // name → uid, gid
	primaryByUID map[int64]int64
	groups       map[string]int64
}

func (a *accounts) load() {
	if a.loaded {
		return
	}
	a.loaded = true
	a.users, a.primaryByUID, a.groups = map[string][2]int64{}, map[int64]int64{}, map[string]int64{}
	if data, err := a.t.readFile(pathPasswd); err != nil {
		a.passwdErr = err
	} else {
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Split(l, ":")
			if len(f) < 4 || f[0] == "" || strings.HasPrefix(f[0], "#") {
				continue
			}
			uid, err1 := strconv.ParseInt(f[2], 10, 64)
			gid, err2 := strconv.ParseInt(f[3], 10, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			if _, dup := a.users[f[0]]; !dup { // the first entry wins, as in getpwnam
				a.users[f[0]] = [2]int64{uid, gid}
			}
			if _, dup := a.primaryByUID[uid]; !dup {
				a.primaryByUID[uid] = gid
			}
		}
	}
	if data, err := a.t.readFile(pathGroup); err != nil {
		a.groupErr = err
	} else {
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Split(l, ":")
			if len(f) < 3 || f[0] == "" || strings.HasPrefix(f[0], "#") {
				continue
			}
			gid, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil {
				continue
			}
			if _, dup := a.groups[f[0]]; !dup {
				a.groups[f[0]] = gid
			}
		}
	}
}

func missingFile(err error, p string) string {
	if errors.Is(err, fs.ErrNotExist) {
		return "the image has no " + p
	}
	return fmt.Sprintf("reading the image's %s: %v", p, err)
}

// lookup resolves USER[:GROUP] to ids. Without GROUP, the group is the
// user's primary group from /etc/passwd, or 0 for an id not listed there.
// The empty owner is root:root.
func (a *accounts) lookup(s string) (uid, gid int, err error) {
	if s == "" {
		return 0, 0, nil
	}
	o, err := parseOwner(s)
	if err != nil {
		return 0, 0, err
	}
	if o.uid < 0 || (o.hasGroup && o.gid < 0) || !o.hasGroup {
		a.load()
	}
	if o.uid < 0 {
		if a.passwdErr != nil {
			return 0, 0, fmt.Errorf("cannot look up user %s: %s", q(o.user), missingFile(a.passwdErr, pathPasswd))
		}
		u, ok := a.users[o.user]
		if !ok {
			return 0, 0, fmt.Errorf("user %s is not in the image's %s", q(o.user), pathPasswd)
		}
		o.uid = u[0]
		if !o.hasGroup {
			o.gid = u[1]
		}
	} else if !o.hasGroup {
		o.gid = a.primaryByUID[o.uid] // 0 when not listed, or without /etc/passwd
	}
	if o.hasGroup && o.gid < 0 {
		if a.groupErr != nil {
			return 0, 0, fmt.Errorf("cannot look up group %s: %s", q(o.group), missingFile(a.groupErr, pathGroup))
		}
		g, ok := a.groups[o.group]
		if !ok {
			return 0, 0, fmt.Errorf("group %s is not in the image's %s", q(o.group), pathGroup)
		}
		o.gid = g
	}
	return int(o.uid), int(o.gid), nil
}

// setRootPassword returns shadow with root's password hash replaced and its
// last change set to today; every other line and field is kept.
func setRootPassword(shadow []byte, hash string, now time.Time) ([]byte, error) {
	lines := strings.SplitAfter(string(shadow), "\n")
	found := false
	for i, l := range lines {
		body := strings.TrimSuffix(l, "\n")
		f := strings.Split(body, ":")
		if f[0] != "root" || len(f) < 2 {
			continue
		}
		if found {
			return nil, errors.New("the image's /etc/shadow has more than one line for root")
		}
		found = true
		f[1] = hash
		if len(f) > 2 {
			f[2] = strconv.FormatInt(now.Unix()/86400, 10)
		}
		lines[i] = strings.Join(f, ":") + l[len(body):]
	}
	if !found {
		return nil, errors.New("the image's /etc/shadow has no line for root")
	}
	return []byte(strings.Join(lines, "")), nil
}
