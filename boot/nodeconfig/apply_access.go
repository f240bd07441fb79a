package nodeconfig

import (
	"os"
	"path"
	"strings"
	"syscall"
	"time"
)

func (p *planner) planAccess(a Access) error {
	if a.RootPasswordHash != "" {
		const field = "access.rootPasswordHash"
		real, fi, err := p.target(field, pathShadow, true)
		if err != nil {
			return err
		}
		if fi == nil || !fi.Mode().IsRegular() {
			return fe(field, "the image has no regular file %s", pathShadow)
		}
		old, err := os.ReadFile(p.t.host(real))
		if err != nil {
			return fe(field, "%v", err)
		}
		data, err := setRootPassword(old, a.RootPasswordHash, time.Now())
		if err != nil {
			return fe(field, "%v", err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		o := &op{kind: opWrite, field: field, path: real, data: data, mode: modeFromFileMode(fi.Mode()), setMode: true,
			uid: int(st.Uid), gid: int(st.Gid), setOwner: true}
		if err := p.add(o, pathShadow); err != nil {
			return err
		}
	}
	if len(a.SSHAuthorizedKeys) > 0 {
		const field = "access.sshAuthorizedKeys"
		keys := "# Written by slate at boot from the node config (access.breakGlass).\n" + strings.Join(a.SSHAuthorizedKeys, "\n") + "\n"
		if err := p.planWrite(field, pathAuthorizedKeys, []byte(keys), 0o600, 0, 0, true, false); err != nil {
			return err
		}
		conf := "# Written by slate at boot from the node config (access.breakGlass).\n" +
			"AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2 " + path.Dir(pathAuthorizedKeys) + "/%u\n"
		if err := p.planGenerated(field, pathSSHDConfig, []byte(conf), 0o644); err != nil {
			return err
		}
	}
	return nil
}
