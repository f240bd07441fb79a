package vm

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// QMPError is an error QEMU returned for a QMP command.
type QMPError struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// errQMPClosed is returned for commands in flight when QEMU closes the
// monitor, which it does when it exits (after `quit`, for instance).
var errQMPClosed = errors.New("qmp: connection closed (qemu exited)")

type qmpReply struct {
	ret json.RawMessage
	err error
}

// qmpClient speaks QMP over one connection. Replies are matched to commands
// by id, so a reader goroutine can also take asynchronous events off the same
// stream; every command has a deadline, and lines have no length limit.
type qmpClient struct {
	conn    net.Conn
	onEvent func(name string, data json.RawMessage)

	mu      sync.Mutex
	pending map[string]chan qmpReply
	nextID  uint64
	closed  bool

	wmu  sync.Mutex    // serialises writes
	done chan struct{} // closed when the reader ends
}

// dialQMP reads QEMU's greeting and negotiates capabilities on conn.
func dialQMP(conn net.Conn, timeout time.Duration, onEvent func(string, json.RawMessage)) (*qmpClient, error) {
	r := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	line, err := r.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("qmp: reading greeting: %w", err)
	}
	var greeting struct {
		QMP *json.RawMessage `json:"QMP"`
	}
	if err := json.Unmarshal(line, &greeting); err != nil || greeting.QMP == nil {
		return nil, fmt.Errorf("qmp: unexpected greeting %q", line)
	}
	_ = conn.SetReadDeadline(time.Time{})
	c := &qmpClient{
		conn:    conn,
		onEvent: onEvent,
		pending: map[string]chan qmpReply{},
		done:    make(chan struct{}),
	}
	go c.read(r)
	if _, err := c.execute("qmp_capabilities", nil, timeout); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *qmpClient) read(r *bufio.Reader) {
	defer close(c.done)
	defer c.closeAll()
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			c.dispatch(line)
		}
		if err != nil {
			return
		}
	}
}

func (c *qmpClient) dispatch(line []byte) {
	var msg struct {
		Event  string          `json:"event"`
		Data   json.RawMessage `json:"data"`
		ID     string          `json:"id"`
		Return json.RawMessage `json:"return"`
		Error  *QMPError       `json:"error"`
	}
	if err := json.Unmarshal(line, &msg); err != nil {
		return // not JSON: nothing QEMU would send; ignore rather than die
	}
	if msg.Event != "" {
		if c.onEvent != nil {
			c.onEvent(msg.Event, msg.Data)
		}
		return
	}
	c.mu.Lock()
	ch := c.pending[msg.ID]
	delete(c.pending, msg.ID)
	c.mu.Unlock()
	if ch == nil {
		return // reply to a command that already timed out
	}
	if msg.Error != nil {
		ch <- qmpReply{err: msg.Error}
		return
	}
	ch <- qmpReply{ret: msg.Return}
}

func (c *qmpClient) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for id, ch := range c.pending {
		ch <- qmpReply{err: errQMPClosed}
		delete(c.pending, id)
	}
}

// execute runs one command and returns its "return" value.
func (c *qmpClient) execute(command string, args any, timeout time.Duration) (json.RawMessage, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errQMPClosed
	}
	c.nextID++
	id := "slate-" + strconv.FormatUint(c.nextID, 10)
	ch := make(chan qmpReply, 1)
	c.pending[id] = ch
	c.mu.Unlock()

	msg := map[string]any{"execute": command, "id": id}
	if args != nil {
		msg["arguments"] = args
	}
	b, err := json.Marshal(msg)
	if err != nil {
		c.forget(id)
		return nil, fmt.Errorf("qmp %s: encoding arguments: %w", command, err)
	}
	c.wmu.Lock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(timeout))
	_, err = c.conn.Write(append(b, '\n'))
	c.wmu.Unlock()
	if err != nil {
		c.forget(id)
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		if qe, ok := r.err.(*QMPError); ok {
			qe.Command = command
		}
		return r.ret, r.err
	case <-timer.C:
		c.forget(id)
		return nil, fmt.Errorf("qmp %s: no reply within %s", command, timeout)
	}
}

func (c *qmpClient) forget(id string) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (c *qmpClient) close() { c.conn.Close() }
