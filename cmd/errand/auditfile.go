package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/errandhq/errand/broker"
)

// exportedEvent is a line of errand audit export --format jsonl, as
// docs/audit-chain.md describes it.
type exportedEvent struct {
	Seq        int64           `json:"seq"`
	Time       string          `json:"time"`
	Type       string          `json:"type"`
	Actor      broker.Actor    `json:"actor"`
	TaskID     string          `json:"task_id"`
	Detail     json.RawMessage `json:"detail"`
	Hash       string          `json:"hash"`
	HashScheme *int            `json:"hash_scheme"`
}

// parseAnchors reads every --anchor seq:hash.
func parseAnchors(ss []string) ([]broker.Anchor, error) {
	var out []broker.Anchor
	for _, s := range ss {
		a, err := broker.ParseAnchor(s)
		if err != nil {
			return nil, usageErrorf("--anchor: %v", err)
		}
		out = append(out, a)
	}
	return out, nil
}

// verifyFileCmd is errand audit verify --file: the chain of an exported
// file, offline, without a database.
func verifyFileCmd(cmd *cobra.Command, path string, anchors []broker.Anchor) error {
	for _, f := range []string{"config", "database-url"} {
		if cmd.Flags().Changed(f) {
			return usageErrorf("--file and --%s: give one (--file verifies an export without a database)", f)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	n, seq, hash, err := verifyFile(f, anchors...)
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "audit chain intact: %d events, head seq %d, hash %s\n", n, seq, hash)
	printAnchors(cmd, anchors)
	return nil
}

func printAnchors(cmd *cobra.Command, anchors []broker.Anchor) {
	for _, a := range anchors {
		fmt.Fprintf(cmd.OutOrStdout(), "anchor seq %d: hash matches\n", a.Seq)
	}
}

// verifyFile walks the chain of a whole export (from seq 1, as errand
// audit export writes it without --since or --until). A file holds no
// chain head, so the newest events cut from its end go unnoticed unless an
// anchor at or beyond them is given.
func verifyFile(r io.Reader, anchors ...broker.Anchor) (int64, int64, string, error) {
	v := broker.NewChainVerifier(anchors...)
	br := bufio.NewReaderSize(r, 64<<10)
	for line := 1; ; line++ {
		b, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(b)) > 0 {
			e, perr := parseExportedLine(b)
			if perr != nil {
				next, _ := v.Head()
				return v.Count(), 0, "", &broker.ChainError{Seq: next + 1,
					Reason: fmt.Sprintf("line %d is not an exported event: %v", line, perr)}
			}
			if aerr := v.Add(e); aerr != nil {
				return v.Count(), 0, "", aerr
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return v.Count(), 0, "", err
		}
	}
	seq, hash := v.Head()
	if err := v.Finish(seq, hash); err != nil {
		return v.Count(), 0, "", err
	}
	return v.Count(), seq, hash, nil
}

// parseExportedLine reads one line strictly: no member the export does
// not write, the time exactly as the export writes it (the hash covers the
// text). A line without hash_scheme is from an export made before schemes
// were recorded, when every event was hashed with the old scheme.
func parseExportedLine(b []byte) (broker.AuditEvent, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var x exportedEvent
	if err := dec.Decode(&x); err != nil {
		return broker.AuditEvent{}, err
	}
	if dec.More() {
		return broker.AuditEvent{}, errors.New("more than one JSON value")
	}
	t, err := time.Parse(time.RFC3339Nano, x.Time)
	if err != nil || t.UTC().Format(time.RFC3339Nano) != x.Time {
		return broker.AuditEvent{}, fmt.Errorf("time %q is not RFC 3339 in UTC as the export writes it", x.Time)
	}
	scheme := broker.HashSchemeGoJSON
	if x.HashScheme != nil {
		scheme = *x.HashScheme
	}
	return broker.AuditEvent{Seq: x.Seq, Time: t, Type: x.Type, Actor: x.Actor, TaskID: x.TaskID,
		Detail: x.Detail, Hash: x.Hash, HashScheme: scheme}, nil
}
