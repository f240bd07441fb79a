package config_test

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/slate-os/slate/agent/status"
	"github.com/slate-os/slate/qemu-tests/testnode"
	"github.com/slate-os/slate/vm"
)

// glassPassword is root's password in observeConfig (the hash is
// `openssl passwd -6 -salt slatetest glass`).
const glassPassword = "glass"

// observeConfig ships the journal to a TLS collector, serves metrics,
// opens a login on the second serial port and gives break-glass an
// expiry.
func observeConfig(port int, tlsc testnode.CollectorTLS, expires time.Time) string {
	ind := func(s string) string { return "      " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n      ") }
	return fmt.Sprintf(`apiVersion: slate.dev/v1alpha1
kind: NodeConfig
hostname: node-observed
network:
  - name: 10-dhcp.network
    contents: |
      [Match]
      Name=en*
      [Network]
      DHCP=yes
systemd:
  units:
    - name: serial-getty@ttyS1.service
      enabled: true
logging:
  collector: tls://10.0.2.2:%d
  serverName: %s
  ca: |
%s
  clientCertificate: |
%s
  clientKey: |
%s
metrics:
  listen: ":9437"
access:
  breakGlass: true
  rootPasswordHash: "$6$slatetest$NXSu7qDk3j4.9ga/e4TBi2cdbuO0O0Um2zLydPURbdMK9duF9ZyZmAtYFNfQb31uwkm1d0LUUis0CXpuo2GRS."
  expires: %s
  afterExpiry: reboot
`, port, tlsc.ServerName, ind(tlsc.CA), ind(tlsc.ClientCert), ind(tlsc.ClientKey), expires.UTC().Format(time.RFC3339))
}

// observeProbe logs a marker to the journal and prints the node's state.
const observeProbe = `
i=0; while [ "$(systemctl is-active slate-health.service)" = activating ] && [ $i -lt 300 ]; do sleep 1; i=$((i+1)); done
echo "BOOTID=$(cat /proc/sys/kernel/random/boot_id)"
echo "slate-test marker $MARK $(cat /proc/sys/kernel/random/boot_id)" | systemd-cat -t slate-test
echo "ROOTHASH=$(grep '^root:' /etc/shadow | cut -d: -f2)"
echo "STATUS=$(slate status --json | base64 -w0)"
slate status | sed 's/^/status: /'
`

// TestObservability: one node, two boots. The journal reaches a TLS
// collector with a client certificate, and what was logged while the
// collector was down (through a reboot) arrives after, from the cursor
// kept on the state partition; the metrics endpoint answers; a root login
// on a serial console taints the node, which stays tainted after the
// reboot; break-glass's expiry reboots the node, which comes back on its
// config without access.
func TestObservability(t *testing.T) {
	d := testnode.Disk(t, "plain", nil)
	col, tlsc := testnode.NewTLSCollector(t)
	// Enough time to boot, log in and out under TCG; then the agent reboots.
	expires := time.Now().Add(vm.Scale(150 * time.Second)).Truncate(time.Second)
	sock := filepath.Join(shortTempDir(t), "s1")
	m := testnode.Boot(t, d.Disk, "MARK=one\n"+observeProbe, func(c *vm.Config) {
		c.FwCfgStrings[fwCfgConfig] = observeConfig(col.Port, tlsc, expires)
		c.Forwards = []vm.Forward{{GuestPort: 9437}}
		c.ExtraArgs = []string{"-chardev", "socket,id=ser1,path=" + sock + ",server=on,wait=off", "-serial", "chardev:ser1"}
	})
	r := testnode.Run(t, m, bootTimeout)
	boot1 := strings.ReplaceAll(r.Get("BOOTID"), "-", "")

	// The journal, as it is written.
	if msg, err := col.Await(bootTimeout, "slate-test marker one", `boot="`+boot1+`"`); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("at the collector: %s", msg)
	}

	// The metrics.
	body := httpGet(t, "http://"+m.HostAddr(9437)+"/metrics")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^slate_info\{.*slot="a".*version="test".*\} 1$`),
		regexp.MustCompile(`(?m)^slate_tainted 1$`),
		regexp.MustCompile(`(?m)^slate_health_good 1$`),
	} {
		if !want.MatchString(body) {
			t.Errorf("metrics lack %s:\n%s", want, body)
		}
	}

	// An outage, then a root login on the second serial port, logged
	// while the collector is down.
	col.Stop()
	serialLogin(t, sock, "node-observed", glassPassword,
		"echo slate-test marker two $(cat /proc/sys/kernel/random/boot_id) | systemd-cat -t slate-test")
	if _, err := m.Expect(regexp.MustCompile(`interactive login: root on ttyS1 \(serial console\)`), bootTimeout); err != nil {
		t.Fatal(err)
	}

	// Break-glass expires: the agent reboots the node.
	if _, err := m.Expect(regexp.MustCompile(`break-glass expired at .*: reboot`), time.Until(expires)+bootTimeout); err != nil {
		t.Fatal(err)
	}
	exit, err := m.WaitExit(vm.ShutdownTimeout)
	if err != nil || exit.Reason != "guest-reset" {
		t.Fatalf("after break-glass expired: %s %v, want a reboot", exit, err)
	}

	// Boot 2, the same config, now expired; the collector is back.
	col.Restart(t)
	if err := m.SetFwCfgString(testnode.FwCfgTest, "MARK=three\n"+observeProbe, false); err != nil {
		t.Fatal(err)
	}
	if err := m.Boot(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Expect(regexp.MustCompile(`break-glass expired at .* \(access.expires\): the config is applied without its access`), bootTimeout); err != nil {
		t.Fatal(err)
	}
	r = testnode.Run(t, m, bootTimeout)
	if h := r.Get("ROOTHASH"); strings.HasPrefix(h, "$6$slatetest$") {
		t.Errorf("root's password is the expired config's: %q", h)
	}
	var st status.Status
	raw, _ := base64.StdEncoding.DecodeString(r.Get("STATUS"))
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("slate status --json: %v", err)
	}
	if st.Config == nil || !st.Config.Applied || st.Config.AccessExpired == nil || st.Config.Tainted {
		t.Errorf("boot 2's config: %+v; want applied, without access (expired), not tainting", st.Config)
	}
	if !st.Tainted || st.Taint == nil || st.Taint.LoginsTotal != 1 || st.Taint.Logins[0].User != "root" || st.Taint.Logins[0].TTY != "ttyS1" ||
		st.Taint.Logins[0].Via != "serial console" || st.Taint.Logins[0].Boot != boot1 {
		t.Errorf("boot 2's taint: %+v; want the root login on ttyS1 of boot 1", st.Taint)
	}
	for _, l := range r.Lines {
		if strings.HasPrefix(l, "status: ") {
			t.Log(l)
		}
	}

	// Everything logged arrives: what boot 1 logged during the outage
	// (from the cursor), its login record, and boot 2's own.
	for _, want := range [][]string{
		{"slate-test marker two", `boot="` + boot1 + `"`},
		{"interactive login: root on ttyS1 (serial console)", `boot="` + boot1 + `"`},
		{"slate-test marker three"},
	} {
		if msg, err := col.Await(vm.Scale(2*time.Minute), want...); err != nil {
			t.Errorf("%v; the markers that did arrive:\n%s\nwhat arrived around boot 1's outage:\n%s", err, strings.Join(col.Matching("marker"), "\n"),
				strings.Join(col.Matching("ttyS1"), "\n"))
		} else {
			t.Logf("at the collector: %s", msg)
		}
	}
	if err := m.Quit(); err != nil {
		t.Fatal(err)
	}
	for _, e := range col.Errors() {
		t.Logf("collector: a connection ended: %s", e)
	}
	n := len(col.Matching("slate-test marker one"))
	t.Logf("%d messages at the collector; marker one arrived %d time(s) (at least once)", len(col.Messages()), n)
}

// shortTempDir is a temporary directory with a short path: a unix socket's
// path is limited to 108 bytes, which t.TempDir can exceed.
func shortTempDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "sl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	var last error
	for range 30 {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return string(b)
			}
			err = fmt.Errorf("%s: %s", resp.Status, b)
		}
		last = err
		time.Sleep(2 * time.Second)
	}
	t.Fatalf("GET %s: %v", url, last)
	return ""
}

// serialLogin logs in on the getty behind the unix socket sock, runs cmd
// and logs out.
func serialLogin(t *testing.T, sock, host, password, cmd string) {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("second serial port: %v", err)
	}
	defer conn.Close()
	var seen strings.Builder
	r := bufio.NewReader(conn)
	wait := func(what string) {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(vm.Scale(2 * time.Minute)))
		for !strings.Contains(seen.String(), what) {
			b, err := r.ReadByte()
			if err != nil {
				t.Fatalf("ttyS1: waiting for %q: %v; it showed:\n%s", what, err, seen.String())
			}
			seen.WriteByte(b)
		}
		s := seen.String()
		seen.Reset()
		seen.WriteString(s[strings.Index(s, what)+len(what):])
	}
	send := func(s string) {
		if _, err := conn.Write([]byte(s + "\r")); err != nil {
			t.Fatal(err)
		}
	}
	// The getty may have printed its prompt before we connected.
	send("")
	wait(host + " login:")
	send("root")
	wait("Password:")
	send(password)
	wait("root@" + host)
	wait("#")
	// The shell's output, not its echo of the line, says the command ran.
	send(cmd + "; echo SERIAL-DONE-$((40+2))")
	wait("SERIAL-DONE-42")
	send("exit")
	time.Sleep(time.Second)
	t.Logf("logged in as root on ttyS1 and out")
}
