// Package logship ships the node's journal off the node, as it is written,
// to the collector the node config names (logging.collector), and with it
// the logs kept from boots that rolled back. `slate logs ship`
// (slate-logship.service) runs it; on an immutable fleet the node whose
// logs explain a failure may be gone by the time anyone looks.
//
// # Protocol
//
// RFC 5424 syslog messages framed by octet counting ("LEN SP MSG", RFC
// 6587 3.4.1) over TCP (tcp://HOST:PORT) or TLS (tls://HOST:PORT, RFC
// 5425): rsyslog, syslog-ng, Vector, Fluent Bit, Graylog and Splunk's
// syslog inputs all accept it, and the node needs nothing beyond the
// agent. systemd-journal-upload would keep every journal field, but it
// needs systemd-journal-remote on the other side and is not in every image.
// Octet counting, unlike a newline after each message, carries
// multi-line and binary messages whole. TLS is 1.2 or later, verified
// against logging.ca (the system roots when empty), with an optional
// client certificate (TLSConfig).
//
// Each journal entry is one message (Entry.ToMessage, Message.Append):
//
//	<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID - [slate@32473 boot="…" unit="…"] MSG
//
// PRI from SYSLOG_FACILITY and PRIORITY (user.info when absent), the
// entry's time in UTC with microseconds, _HOSTNAME, SYSLOG_IDENTIFIER (else
// _COMM), _PID, no MSGID, _BOOT_ID and _SYSTEMD_UNIT as structured data
// (SDID: operators match on slate@32473), and MESSAGE as UTF-8 without a
// BOM (bytes that are not UTF-8 written \xNN, at most MaxText).
//
// # At least once, across outages and reboots
//
// The shipper keeps a cursor on the state partition (StateDir/cursor,
// replaced atomically: temporary file, fsync, rename): the journal cursor
// of the last entry delivered. It reads the journal after it (`journalctl
// -o json --no-tail --all --after-cursor=…` to catch up across every boot,
// then the same with --follow from the last entry: --follow alone is "this
// boot only" since systemd 250, which would skip what the previous boot
// logged during an outage; without a cursor, from the start of the
// journal), sends a batch, and
// moves the cursor only once the collector's TCP stack has acknowledged
// every byte of it: after the write it polls the socket's send queue
// (ioctl SIOCOUTQ on the TCP socket, under TLS too, is the bytes not yet
// acknowledged) until it is empty, with the connection still open. That
// is delivery to the collector host's TCP stack, the strongest guarantee
// syslog over TCP offers without RELP: a collector that crashes with
// acknowledged bytes unread loses them, and so does a NAT or proxy in
// the way, which acknowledges for the collector (QEMU's user network
// does). Acknowledgements count only while the connection is established
// both ways: once the collector has closed its side (CLOSE_WAIT), nothing
// more is sent on it. On a write error, a queue that
// does not drain within AckTimeout, or a collector that closes the
// connection, the shipper closes it, reconnects with backoff (1 s doubling
// to 30 s) and reads the journal again from the saved cursor: what may
// have arrived is sent again (duplicates, never loss). A reboot does the
// same. A new connection is used only once it stayed up for Settle, so
// that a load balancer without a backend or a TLS 1.3 server that rejects
// the client certificate after the handshake does not acknowledge data
// into the void.
//
// # Bounded buffering
//
// The journal is the buffer, within journald's own size limits: in memory
// there is at most one batch (BatchEntries entries or BatchBytes bytes)
// and the entry being read. While the collector is down nothing is read
// past the cursor; journalctl runs only while a connection is up.
//
// # Logs of failed boots
//
// The journal and console kept from the boots of a generation that rolled
// back (agent/history: /var/lib/slate/rollbacks/<gen>-<slot>/, journal.txt
// and console.txt) are shipped when the daemon starts (its unit is ordered
// after slate-health.service, so the running boot has been judged): a
// first line that says what rolled back, then every line of the files, as
// messages with APP-NAME slate-rollback and structured data
//
//	[slate@32473 rollback="<dir>" file="console.txt|journal.txt" boot="…" fromSlot="…" fromVersion="…" toSlot="…" cause="…"]
//
// (boot, from journal.txt's headers, when known). Once the collector has
// acknowledged them, the directory is marked with a file named shipped and
// not sent again. A directory that cannot be read is skipped with a
// warning.
//
// # Failures
//
// Run never gives up on the collector: it logs one line when the collector
// becomes unreachable ("collector X unreachable: …; retrying") and one when
// a connection is up again ("collector X: connected, shipping from cursor
// …"), not one per retry. Nothing waits for the shipper: a collector that
// is down delays no boot.
package logship
