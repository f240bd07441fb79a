package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/slate-os/slate/agent/logship"
	"github.com/slate-os/slate/boot/nodeconfig"
)

func runLogsShip(t *testing.T, cfg *nodeconfig.Config) (string, error) {
	t.Helper()
	savedConfig, savedOptions := logsConfig, logsOptions
	t.Cleanup(func() { logsConfig, logsOptions = savedConfig, savedOptions })
	logsConfig = func() (*nodeconfig.Config, error) { return cfg, nil }
	var ran bool
	logsOptions = func(o *logship.Options) {
		ran = true
		o.Collector = "udp://never-dialled:1" // Run refuses it at once
	}
	c := logsCmd()
	var out bytes.Buffer
	c.SetArgs([]string{"ship"})
	c.SetOut(&out)
	c.SetErr(&out)
	err := c.ExecuteContext(context.Background())
	if ran && err == nil {
		t.Error("the shipper ran with a refused collector")
	}
	return out.String(), err
}

// Without a collector there is nothing to do: one line, success.
func TestLogsShipNoCollector(t *testing.T) {
	out, err := runLogsShip(t, &nodeconfig.Config{})
	if err != nil || out != "logs: the node config has no logging.collector: nothing to ship\n" {
		t.Errorf("%q, %v", out, err)
	}
}

// PEM material that passes the config's check but does not parse is an
// error naming its field.
func TestLogsShipBadPEM(t *testing.T) {
	junk := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}))
	for _, c := range []struct {
		l    nodeconfig.Logging
		want string
	}{
		{nodeconfig.Logging{Collector: "tls://logs.example:6514", CA: junk}, "logging.ca"},
		{nodeconfig.Logging{Collector: "tls://logs.example:6514", ClientCertificate: junk, ClientKey: "x"}, "logging.clientCertificate"},
	} {
		_, err := runLogsShip(t, &nodeconfig.Config{Logging: c.l})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %s", c.l, err, c.want)
		}
	}
	// Good material gets as far as the shipper.
	_, err := runLogsShip(t, &nodeconfig.Config{Logging: nodeconfig.Logging{Collector: "tcp://logs.example:514"}})
	if err == nil || !strings.Contains(err.Error(), "udp://never-dialled:1") {
		t.Errorf("tcp: %v", err)
	}
}
