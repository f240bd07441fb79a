package configsrc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slate-os/slate/boot/record"
)

// Metadata services: every cloud serves one at http://169.254.169.254,
// plain HTTP on a link-local address. The init speaks just enough HTTP/1.1
// for them (one request per connection; Content-Length, chunked or
// close-delimited bodies) on a plain TCP socket: net/http would add 1.5 MB
// to the init for what no metadata service needs (TLS, proxies, HTTP/2,
// cookies), and cmd/slate-init's deps_test keeps it out; package net's
// dialer alone would add 400 KB, mostly its name resolver.
const MetadataBase = "http://169.254.169.254"

// The bound on a metadata service that does not answer. Each request waits
// at most RequestTimeout for its whole answer; one that gets no answer, a
// refused connection, 429 or a 5xx (and whatever a source adds: Azure's
// 404 and 410 while the VM is being provisioned) is retried after a
// backoff from 250 ms, doubling to 1 s at most, until the source's
// MetadataTimeout is spent. A service that never answers thus costs a
// source MetadataTimeout (8 s), counted after Env.Network returns; the
// source then returns ErrNotFound and says so on the console.
const (
	MetadataTimeout = 8 * time.Second
	RequestTimeout  = 2 * time.Second
)

const (
	firstBackoff = 250 * time.Millisecond
	maxBackoff   = time.Second
)

// User data outcomes, for record.Platform.UserData.
const (
	UserDataConfig = "slate node config"
	UserDataNone   = "none"
)

// userDataOther is UserData for user data that is something else.
func userDataOther(kind string) string { return "not a slate node config (" + kind + ")" }

// Platforms, as Env.Platform and record.Platform.Name name them.
const (
	PlatformEC2       = "ec2"
	PlatformGCE       = "gce"
	PlatformAzure     = "azure"
	PlatformOpenStack = "openstack"
	PlatformNoCloud   = "nocloud"
)

// HTTPTiming are a metadata source's bounds; zero fields are the defaults.
type HTTPTiming struct {
	// Timeout overrides MetadataTimeout and RequestTimeout overrides
	// RequestTimeout (tests).
	Timeout, RequestTimeout time.Duration
}

// mdClient asks one metadata service. It is not safe for concurrent use.
type mdClient struct {
	src     string // the source's name, for errors
	base    string // http://host[:port], for errors and Location
	addr    *unix.SockaddrInet4
	host    string // the Host header
	header  []string
	timeout time.Duration
	// retryStatus adds statuses to retry to 429 and 5xx.
	retryStatus func(int) bool
	// answered is true once the service has sent any answer: from then
	// on a failure is an error, not "no service here".
	answered bool
}

// response is a metadata service's answer.
type response struct {
	status int
	reason string
	header map[string]string // names in lower case
	body   []byte
}

// newClient returns a client for base (Env.HTTPBase, else MetadataBase),
// sending header (name, value pairs) with every request.
func newClient(src, base string, t HTTPTiming, header ...string) (*mdClient, error) {
	if base == "" {
		base = MetadataBase
	}
	base = strings.TrimSuffix(base, "/")
	hostport, ok := strings.CutPrefix(base, "http://")
	if !ok || hostport == "" || strings.ContainsAny(hostport, "/?#@ ") {
		return nil, fmt.Errorf("%s: metadata service URL %q: want http://host[:port]", src, base)
	}
	addr, err := parseIPv4Port(hostport)
	if err != nil {
		return nil, fmt.Errorf("%s: metadata service URL %q: %w", src, base, err)
	}
	rt := t.RequestTimeout
	if rt == 0 {
		rt = RequestTimeout
	}
	return &mdClient{src: src, base: base, addr: addr, host: hostport, header: header, timeout: rt}, nil
}

// url is the full URL of path, for errors and Location.
func (c *mdClient) url(path string) string { return c.base + path }

// budget returns the source's deadline for its requests.
func (t HTTPTiming) budget(ctx context.Context) (context.Context, context.CancelFunc) {
	d := t.Timeout
	if d == 0 {
		d = MetadataTimeout
	}
	return context.WithTimeout(ctx, d)
}

// get asks for path with GET and the client's headers plus header.
func (c *mdClient) get(ctx context.Context, path string, header ...string) (*response, error) {
	return c.do(ctx, "GET", path, header)
}

// do sends a request, retrying as the package's bound says, and returns
// the last answer (whatever its status) or the last error.
func (c *mdClient) do(ctx context.Context, method, path string, header []string) (*response, error) {
	if _, ok := ctx.Deadline(); !ok { // the sources give a budget; never retry forever
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, MetadataTimeout)
		defer cancel()
	}
	backoff := firstBackoff
	for {
		resp, err := c.once(ctx, method, path, header)
		if err == nil {
			c.answered = true
			if !c.retryable(resp.status) {
				return resp, nil
			}
			err = fmt.Errorf("%s %s: %s", method, c.url(path), resp.statusText())
		}
		if cerr := ctx.Err(); cerr != nil {
			if resp != nil {
				return resp, nil // the last answer, for the caller to judge
			}
			return nil, err
		}
		if sleep(ctx, backoff) != nil {
			if resp != nil {
				return resp, nil
			}
			return nil, err
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (c *mdClient) retryable(status int) bool {
	return status == 429 || status >= 500 || c.retryStatus != nil && c.retryStatus(status)
}

func (r *response) statusText() string {
	if r.reason == "" {
		return strconv.Itoa(r.status)
	}
	return strconv.Itoa(r.status) + " " + r.reason
}

// once sends one request on a new connection and reads the answer, within
// RequestTimeout and ctx.
func (c *mdClient) once(ctx context.Context, method, path string, header []string) (*response, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	fail := func(err error) (*response, error) {
		switch cerr := ctx.Err(); {
		case errors.Is(cerr, context.Canceled):
			err = cerr
		case cerr != nil || errors.Is(err, os.ErrDeadlineExceeded):
			err = fmt.Errorf("no answer after %s", time.Since(start).Round(10*time.Millisecond))
		}
		return nil, fmt.Errorf("%s %s: %w", method, c.url(path), err)
	}
	conn, err := dialTCP(ctx, c.addr)
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: slate-init\r\nAccept: */*\r\nConnection: close\r\n", method, path, c.host)
	hdr := append(append([]string(nil), c.header...), header...)
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&req, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	if method != "GET" && method != "HEAD" {
		req.WriteString("Content-Length: 0\r\n")
	}
	req.WriteString("\r\n")
	if _, err := conn.Write(req.Bytes()); err != nil {
		return fail(err)
	}
	// Header and body: MaxSize and some.
	resp, err := readResponse(bufio.NewReader(io.LimitReader(conn, MaxSize+64<<10)), method)
	if err != nil {
		return fail(err)
	}
	return resp, nil
}

// parseIPv4Port parses a.b.c.d[:port] (port 80 by default). The metadata
// services are all at 169.254.169.254: no names, no IPv6, and so neither a
// resolver nor net/netip in the init.
func parseIPv4Port(s string) (*unix.SockaddrInet4, error) {
	host, port, hasPort := strings.Cut(s, ":")
	sa := &unix.SockaddrInet4{Port: 80}
	if hasPort {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("bad port %q", port)
		}
		sa.Port = int(p)
	}
	parts := strings.Split(host, ".")
	if len(parts) != 4 {
		return nil, errors.New("want http://IPv4-address[:port]")
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 8)
		if err != nil || len(p) > 1 && p[0] == '0' {
			return nil, errors.New("want http://IPv4-address[:port]")
		}
		sa.Addr[i] = byte(n)
	}
	return sa, nil
}

// dialTCP connects to addr within ctx. The socket is non-blocking and
// wrapped in an os.File, so that the runtime's poller waits on it and
// deadlines apply: ctx's deadline is the connection's.
func dialTCP(ctx context.Context, addr *unix.SockaddrInet4) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "tcp")
	if d, ok := ctx.Deadline(); ok {
		f.SetDeadline(d)
	}
	if err := connect(ctx, f, addr); err != nil {
		f.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	return f, nil
}

// connect connects f's socket, waiting for it through the poller.
func connect(ctx context.Context, f *os.File, sa unix.Sockaddr) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { f.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var cerr error
	if err := rc.Control(func(fd uintptr) { cerr = unix.Connect(int(fd), sa) }); err != nil {
		return err
	}
	if cerr != unix.EINPROGRESS {
		return cerr
	}
	// The socket turns writable once connected or failed.
	cerr = nil
	werr := rc.Write(func(fd uintptr) bool {
		if _, err := unix.Getpeername(int(fd)); err == nil {
			return true
		}
		soerr, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			cerr = err
		case soerr != 0:
			cerr = unix.Errno(soerr)
		default:
			return false // still connecting: wait
		}
		return true
	})
	if werr != nil {
		return werr
	}
	return cerr
}

// readResponse reads an HTTP/1.x answer: status line, header, and a body
// delimited by Content-Length, chunked, or the end of the connection, at
// most MaxSize bytes of it.
func readResponse(br *bufio.Reader, method string) (*response, error) {
	var r response
	for {
		line, err := readCRLFLine(br)
		if err != nil {
			return nil, fmt.Errorf("reading the status line: %w", err)
		}
		proto, rest, _ := strings.Cut(line, " ")
		code, reason, _ := strings.Cut(rest, " ")
		n, err := strconv.Atoi(code)
		if !strings.HasPrefix(proto, "HTTP/1.") || err != nil || len(code) != 3 {
			return nil, fmt.Errorf("not an HTTP/1 status line: %.40q", line)
		}
		r.status, r.reason = n, reason
		if r.header, err = readHeader(br); err != nil {
			return nil, fmt.Errorf("reading the header: %w", err)
		}
		if n >= 200 || n == 101 {
			break
		}
		// 1xx: an interim answer, the real one follows.
	}
	if method == "HEAD" || r.status == 204 || r.status == 304 {
		return &r, nil
	}
	var body io.Reader
	switch te := strings.ToLower(r.header["transfer-encoding"]); {
	case te == "chunked":
		body = &chunkedReader{br: br}
	case te != "" && te != "identity":
		return nil, fmt.Errorf("transfer encoding %q", te)
	case r.header["content-length"] != "":
		n, err := strconv.ParseInt(strings.TrimSpace(r.header["content-length"]), 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bad Content-Length %.20q", r.header["content-length"])
		}
		if n > MaxSize {
			return nil, fmt.Errorf("the answer is %d bytes, more than the %d allowed", n, MaxSize)
		}
		body = io.LimitReader(br, n)
		b, err := io.ReadAll(body)
		if err != nil {
			return nil, fmt.Errorf("reading the body: %w", err)
		}
		if int64(len(b)) < n {
			return nil, fmt.Errorf("the body ends after %d of %d bytes", len(b), n)
		}
		r.body = b
		return &r, nil
	default:
		body = br // until the server closes the connection
	}
	b, err := readLimited(body)
	if err != nil {
		return nil, fmt.Errorf("reading the body: %w", err)
	}
	r.body = b
	return &r, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// chunkedReader decodes a chunked body (RFC 9112 section 7.1), ignoring
// chunk extensions and trailers.
type chunkedReader struct {
	br   *bufio.Reader
	left int64 // bytes left in the current chunk
	done bool
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	if c.left == 0 {
		line, err := readCRLFLine(c.br)
		if err != nil {
			return 0, err
		}
		size, _, _ := strings.Cut(line, ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 || n > MaxSize {
			return 0, fmt.Errorf("bad chunk size %.20q", line)
		}
		if n == 0 {
			for { // trailers, up to the empty line
				if line, err := readCRLFLine(c.br); err != nil {
					return 0, err
				} else if line == "" {
					break
				}
			}
			c.done = true
			return 0, io.EOF
		}
		c.left = n
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.br.Read(p)
	c.left -= int64(n)
	if c.left == 0 && err == nil {
		if line, lerr := readCRLFLine(c.br); lerr != nil || line != "" {
			return n, errors.New("a chunk does not end with CRLF")
		}
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// readCRLFLine reads a line of at most the reader's buffer (4 KiB), and
// returns it without its CRLF or LF.
func readCRLFLine(br *bufio.Reader) (string, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", errors.New("a line longer than 4 KiB")
	}
	if err != nil {
		return "", noEOF(err)
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

// maxHeaderLines bounds an answer's header.
const maxHeaderLines = 100

// readHeader reads header lines up to the empty one. Names are lower-cased;
// a repeated name keeps its first value (Content-Length twice is refused,
// as RFC 9112 says, when the values differ).
func readHeader(br *bufio.Reader) (map[string]string, error) {
	h := map[string]string{}
	for i := 0; ; i++ {
		line, err := readCRLFLine(br)
		if err != nil {
			return nil, err
		}
		if line == "" {
			return h, nil
		}
		if i == maxHeaderLines {
			return nil, fmt.Errorf("more than %d header lines", maxHeaderLines)
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("malformed header line %.40q", line)
		}
		name, value = strings.ToLower(name), strings.TrimSpace(value)
		if old, seen := h[name]; seen {
			if name == "content-length" && old != value {
				return nil, errors.New("two different Content-Length")
			}
			continue
		}
		h[name] = value
	}
}

// maxFact bounds a fact's length: they are short names and ids.
const maxFact = 255

// facts GETs each path (in order) and sets its fact to the answer when it
// is 200 and one short printable line; a fact the service does not have
// stays empty. Facts are the record's, not the config's: a failure leaves
// the rest empty and is a console note, not an error.
func (c *mdClient) facts(ctx context.Context, facts map[string]*string) {
	paths := make([]string, 0, len(facts))
	for p := range facts {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		resp, err := c.get(ctx, p)
		if err != nil {
			logf(ctx, "%s: the platform's facts are incomplete: %v", c.src, err)
			return
		}
		if resp.status == 200 {
			*facts[p] = fact(string(resp.body))
		}
	}
}

// isPrintable is true for a string of printable ASCII.
func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// network brings the network up for src's metadata service through
// Env.Network. When there is none, or it fails, it says so on the console
// and returns ErrNotFound: the node boots on the image's defaults.
func network(ctx context.Context, src string) error {
	env := EnvFrom(ctx)
	if env.Network == nil {
		logf(ctx, "%s: the init has no network to offer: not asking the metadata service", src)
		return ErrNotFound
	}
	if err := env.Network(ctx); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		logf(ctx, "%s: no network for the metadata service: %v", src, err)
		return ErrNotFound
	}
	return nil
}

// unanswered turns a failure before the service ever answered into
// ErrNotFound with a console note (there may be no metadata service at
// all), and returns any other error as it is.
// ctx is the source's own, not its budget's.
func (c *mdClient) unanswered(ctx context.Context, err error) error {
	if c.answered || errors.Is(err, ErrNotFound) {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	logf(ctx, "%s: no answer from the metadata service at %s: %v", c.src, c.base, err)
	return ErrNotFound
}

// userData decides what a source returns for the user data it found
// (nil: none) at location, and sets facts.UserData: a slate node config
// is returned; anything else, or nothing, is ErrNotFound with a console
// note. The user data itself is never logged: it may hold secrets.
func userData(ctx context.Context, facts *record.Platform, location string, b []byte) ([]byte, error) {
	env := EnvFrom(ctx)
	switch ok, kind := IsNodeConfig(b); {
	case ok:
	case kind == "":
		facts.UserData = UserDataNone
		logf(ctx, "%s: no user data", facts.Name)
		return nil, ErrNotFound
	default:
		facts.UserData = userDataOther(kind)
		logf(ctx, "%s: the user data at %s is not a slate node config (%s): ignoring it", facts.Name, location, kind)
		return nil, ErrNotFound
	}
	facts.UserData = UserDataConfig
	env.Location = location
	return b, nil
}

// IsNodeConfig says whether user data is a slate node config: YAML or
// JSON whose top-level apiVersion is slate.dev/<version>. The version
// itself is the parser's to check, so that a config meant for slate but
// wrong says why. For anything else it says what the data looks like, for
// the console and the record: cloud-init's first line (#cloud-config,
// #include, ...), "#! script", "MIME multi-part", "gzip", "Ignition
// config", "JSON", "text" or "binary"; "" for empty (or blank) user data.
// Compressed user data is not opened: a slate config is given as is.
func IsNodeConfig(b []byte) (ok bool, kind string) {
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return false, ""
	}
	first, _, _ := bytes.Cut(t, []byte("\n"))
	first = bytes.TrimSpace(first)
	switch {
	case bytes.HasPrefix(t, []byte{0x1f, 0x8b}):
		return false, "gzip"
	case bytes.HasPrefix(first, []byte("#!")):
		return false, "#! script"
	case bytes.HasPrefix(first, []byte("#")):
		// cloud-init's markers: #cloud-config, #include, #cloud-boothook,
		// #part-handler, #cloud-config-archive, ## template: jinja. Any
		// other comment may open a slate YAML config.
		w := strings.ToLower(strings.Fields(string(first))[0])
		for _, m := range []string{"#cloud-config", "#cloud-config-archive", "#include", "#include-once", "#cloud-boothook", "#part-handler", "#cloud-config-jsonp"} {
			if w == m {
				return false, m
			}
		}
		if w == "##" && strings.Contains(string(first), "template:") {
			return false, "template"
		}
	case bytes.HasPrefix(bytes.ToLower(first), []byte("content-type:")) || bytes.HasPrefix(bytes.ToLower(first), []byte("mime-version:")):
		return false, "MIME multi-part"
	case t[0] == '{':
		var top map[string]json.RawMessage
		if json.Unmarshal(t, &top) == nil {
			var v string
			if json.Unmarshal(top["apiVersion"], &v) == nil && strings.HasPrefix(v, slateAPIGroup) {
				return true, ""
			}
			if _, ok := top["ignition"]; ok {
				return false, "Ignition config"
			}
			return false, "JSON"
		}
		// Not valid JSON: meant for slate if it says so (the parser will
		// say what is wrong), else unrecognised.
		if jsonAPIVersion(t) {
			return true, ""
		}
	}
	if yamlAPIVersion(t) {
		return true, ""
	}
	if !isText(t) {
		return false, "binary"
	}
	if t[0] == '{' || t[0] == '[' {
		return false, "JSON"
	}
	return false, "text"
}

// slateAPIGroup prefixes every slate apiVersion (nodeconfig.APIVersion).
const slateAPIGroup = "slate.dev/"

// yamlAPIVersion finds a top-level (unindented) apiVersion: slate.dev/...
func yamlAPIVersion(b []byte) bool {
	for _, line := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(line, "apiVersion:")
		if !ok {
			continue
		}
		v, _, _ = strings.Cut(v, " #")
		v = strings.Trim(strings.TrimSpace(v), `"'`)
		return strings.HasPrefix(v, slateAPIGroup)
	}
	return false
}

// jsonAPIVersion finds "apiVersion": "slate.dev/... in text that is not
// valid JSON.
func jsonAPIVersion(b []byte) bool {
	s := string(b)
	for {
		i := strings.Index(s, `"apiVersion"`)
		if i < 0 {
			return false
		}
		s = s[i+len(`"apiVersion"`):]
		r := strings.TrimLeft(s, " \t\r\n")
		if r, ok := strings.CutPrefix(r, ":"); ok && strings.HasPrefix(strings.TrimLeft(r, " \t\r\n"), `"`+slateAPIGroup) {
			return true
		}
	}
}

// isText is true when b's first KiB has no NUL and no other control
// character than tab, CR, LF and form feed.
func isText(b []byte) bool {
	if len(b) > 1024 {
		b = b[:1024]
	}
	for _, c := range b {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f' || c == 0x7f {
			return false
		}
	}
	return true
}
