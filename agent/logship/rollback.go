package logship

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/slate-os/slate/agent/history"
	"github.com/slate-os/slate/internal/fsync"
)

// The history store's layout (agent/history): rollbacks/<gen>-<slot>/
// holds rollback.json and the kept logs.
const (
	rollbacksDir = "rollbacks"
	rollbackFile = "rollback.json"
)

// RollbackLogs are the files of a rollback directory that are shipped, in
// this order: the kernel's console from pstore, then the journals.
var RollbackLogs = []string{"console.txt", "journal.txt"}

// ShippedFile marks a rollback directory whose logs the collector
// acknowledged; such a directory is not shipped again.
const ShippedFile = "shipped"

// RollbackApp is the APP-NAME of the rollbacks' messages.
const RollbackApp = "slate-rollback"

// pending is a rollback directory not yet shipped.
type pending struct {
	name, dir string
	r         history.Rollback
}

// skipError is a rollback directory that cannot be read: skipped (and
// shipped at the next start, if it can be read then), not fatal.
type skipError struct {
	dir string
	err error
}

func (e *skipError) Error() string { return e.dir + ": " + e.err.Error() }
func (e *skipError) Unwrap() error { return e.err }

// findRollbacks lists the rollback directories not marked shipped, oldest
// first. Those that cannot be read are skipped with a warning.
func (s *shipper) findRollbacks() []pending {
	root := filepath.Join(s.o.HistoryDir, rollbacksDir)
	ents, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		s.log("warning: %v: the logs of rolled-back boots are not shipped", err)
		return nil
	}
	var ps []pending
	for _, e := range ents {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".partial") {
			continue
		}
		dir := filepath.Join(root, e.Name())
		if _, err := os.Lstat(filepath.Join(dir, ShippedFile)); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			s.log("warning: %v: skipped", err)
			continue
		}
		p := pending{name: e.Name(), dir: dir}
		data, err := os.ReadFile(filepath.Join(dir, rollbackFile))
		if err == nil {
			if err = json.Unmarshal(data, &p.r); err != nil {
				err = fmt.Errorf("%s: %w", filepath.Join(dir, rollbackFile), err)
			}
		}
		if err != nil {
			s.log("warning: %v: skipped, not marked shipped", err)
			continue
		}
		ps = append(ps, p)
	}
	slices.SortStableFunc(ps, func(a, b pending) int {
		if c := a.r.Time.Compare(b.r.Time); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	return ps
}

// bootHeaderRe is the line history puts before each failed boot's journal
// in journal.txt.
var bootHeaderRe = regexp.MustCompile(`^==== boot ([0-9a-f]{32})\b`)

// shipRollback ships one rollback directory: a line that says what rolled
// back, then each line of console.txt and journal.txt as a message, every
// one with the rollback's parameters. Only once the collector acknowledged
// all of them is the directory marked shipped. Errors reading the
// directory are *skipError; others are the collector's.
func (s *shipper) shipRollback(ctx context.Context, c *conn, p pending) error {
	r := &p.r
	t := r.Time
	if t.IsZero() {
		t = s.o.Now()
	}
	msg := func(sev int, file, boot string, text []byte) *Message {
		return &Message{
			Facility: FacilityUser,
			Severity: sev,
			Time:     t,
			Hostname: s.o.Hostname,
			AppName:  RollbackApp,
			Params: []Param{
				{"rollback", p.name}, {"file", file}, {"boot", boot},
				{"fromSlot", string(r.FromSlot)}, {"fromVersion", r.FromVersion},
				{"toSlot", string(r.ToSlot)}, {"cause", r.Cause},
			},
			Text: text,
		}
	}
	var b batch
	summary := fmt.Sprintf("slate: %s in slot %s (generation %d) rolled back to slot %s (%s): %s; the logs kept from its boots follow",
		orDash(r.FromVersion), orDash(string(r.FromSlot)), r.FromGeneration, orDash(string(r.ToSlot)), orDash(r.ToVersion), orDash(r.Cause))
	b.add(msg(SeverityWarning, "", "", []byte(summary)), "")
	for _, name := range RollbackLogs {
		path := filepath.Join(p.dir, name)
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return &skipError{p.dir, err}
		}
		br := bufio.NewReaderSize(f, 64<<10)
		boot := ""
		for {
			line, _, err := readLine(br, MaxLine)
			if err != nil {
				f.Close()
				if errors.Is(err, io.EOF) {
					break
				}
				return &skipError{p.dir, fmt.Errorf("%s: %w", name, err)}
			}
			line = bytes.TrimRight(line, "\r")
			if m := bootHeaderRe.FindSubmatch(line); m != nil && name == "journal.txt" {
				boot = string(m[1])
			}
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			b.add(msg(SeverityInfo, name, boot, line), "")
			if b.n >= s.o.BatchEntries || len(b.buf) >= s.o.BatchBytes {
				if err := s.flush(ctx, c, &b); err != nil {
					f.Close()
					return err
				}
			}
		}
	}
	if err := s.flush(ctx, c, &b); err != nil {
		return err
	}
	mark := fmt.Sprintf("%s %s\n", s.o.Now().UTC().Format(time.RFC3339), s.o.Collector)
	if err := fsync.WriteFile(filepath.Join(p.dir, ShippedFile), []byte(mark), 0o644); err != nil {
		s.log("warning: marking %s shipped: %v: it will be shipped again", p.dir, err)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
