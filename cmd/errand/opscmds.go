package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/errandhq/errand/client"
)

var (
	taskStatuses     = []string{"pending", "approved", "denied", "closed", "expired", "revoked"}
	approvalStatuses = []string{"pending", "approved", "denied", "used", "expired"}
)

// taskExtras adds task history and task wait to the task command.
func taskExtras(g *globals, task *cobra.Command) {
	history := &cobra.Command{
		Use:     "history TASK",
		Short:   "Show a task with its audit events and the credentials issued for it",
		Example: "  errand task history tsk_… --token \"$ALICE\"\n  errand task history tsk_… -o json | jq '.credentials | length'",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var h struct {
				Task        client.Task         `json:"task"`
				Events      []client.Event      `json:"events"`
				Credentials []client.Credential `json:"credentials"`
				Truncated   bool                `json:"truncated"`
			}
			raw, err := g.client().Do(cmd.Context(), http.MethodGet, "/v1/tasks/"+url.PathEscape(args[0])+"/history", nil, &h)
			if err != nil {
				return err
			}
			now := time.Now()
			g.emit(cmd.OutOrStdout(), raw, func(w io.Writer) {
				printTask(w, h.Task)
				fmt.Fprintln(w)
				fmt.Fprintln(w, "SEQ\tTIME\tTYPE\tACTOR\tDETAIL")
				for _, e := range h.Events {
					actor := e.Actor.Kind
					if e.Actor.Subject != "" {
						actor += ":" + e.Actor.Subject
					}
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", e.Seq, when(e.Time, now), shown(e.Type), shown(actor), summary(e.Detail))
				}
				fmt.Fprintln(w)
				credentialTable(w, h.Credentials, now)
				if h.Truncated {
					fmt.Fprintln(w, "truncated: the history is longer than one answer; read the rest with errand audit events --task "+shown(h.Task.ID)+" --all")
				}
			})
			return nil
		},
	}

	var timeout, interval time.Duration
	wait := &cobra.Command{
		Use:   "wait TASK",
		Short: "Wait until a task is decided: exit 0 approved, 4 denied or ended, 5 still pending at --timeout",
		Long: `errand task wait polls the task until it leaves pending, then prints it. It exits 0 when
the task is approved, 4 when it was denied (or closed, expired or revoked before a
decision), and 5 when --timeout passes with the task still pending.`,
		Example: `  TASK=$(errand task create -q …)
  errand task wait "$TASK" --timeout 10m && errand token mint "$TASK" …`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := g.client()
			return waitUntil(cmd.Context(), timeout, interval, "task "+shown(args[0]), func(ctx context.Context) (bool, error) {
				t, raw, err := c.GetTask(ctx, args[0])
				if err != nil || t.Status == "pending" {
					return false, err
				}
				g.emit(cmd.OutOrStdout(), raw, func(w io.Writer) { printTask(w, t) })
				if t.Status == "approved" {
					return true, nil
				}
				return true, refusedError{msg: "task " + shown(t.ID) + " is " + shown(t.Status), reported: true}
			})
		},
	}
	wait.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long, exit 5 (default: wait until decided)")
	wait.Flags().DurationVar(&interval, "interval", 2*time.Second, "how often to ask")
	task.AddCommand(history, wait)
}

// waitUntil calls poll every interval until it is done (or fails), and
// fails with a pendingError (exit 5) naming what once timeout passes (0:
// no limit).
func waitUntil(ctx context.Context, timeout, interval time.Duration, what string, poll func(context.Context) (bool, error)) error {
	if interval <= 0 {
		return usageErrorf("--interval must be positive")
	}
	if timeout < 0 {
		return usageErrorf("--timeout must not be negative")
	}
	deadline := time.Now().Add(timeout)
	for {
		done, err := poll(ctx)
		if done || err != nil {
			return err
		}
		left := time.Until(deadline)
		if timeout > 0 && left <= 0 {
			return pendingError{what + " is still pending after " + timeout.String()}
		}
		pause := interval
		if timeout > 0 && left < pause {
			pause = left
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

// tokenRevoke is errand token revoke (RFC 7009).
func tokenRevoke(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ACCESS_TOKEN",
		Short: "Revoke one access token (RFC 7009; as its task's agent or user)",
		Long: `errand token revoke revokes one credential at once (POST /v1/revoke). As RFC 7009
asks, the server answers the same for a token it does not know or that is not
yours: the command succeeds and nothing changes. errand token introspect tells
whether a token is still active.`,
		Example: `  errand token revoke "$AT" --token "$AGENT"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := g.client().Do(cmd.Context(), http.MethodPost, "/v1/revoke", url.Values{"token": {args[0]}}, nil); err != nil {
				return err
			}
			g.emit(cmd.OutOrStdout(), []byte(`{"revoked":true}`), func(w io.Writer) {
				fmt.Fprintln(w, "revoked\ttrue (if it was a token of yours; RFC 7009 answers the same for any other)")
			})
			return nil
		},
	}
}

func newAgentCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Suspend and unsuspend an agent: the kill switch (as an admin)",
		Example: `  errand agent suspend "https://agents.example.com#agent-1" --reason "leaked prompt" --token "$ADMIN"
  errand agent unsuspend "https://agents.example.com#agent-1" --token "$ADMIN"`,
	}
	var reason string
	suspend := &cobra.Command{
		Use:   "suspend ISSUER#SUB",
		Short: "Revoke every task and credential of an agent and refuse its new tasks until unsuspended",
		Long: `The agent is named as its tasks show it: its issuer's URL exactly as in its tokens'
iss, '#', its subject. Only a user in the issuer's admin_group may.`,
		Example: `  errand agent suspend "https://agents.example.com#agent-1" --reason "leaked prompt"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				TasksEnded int `json:"tasks_ended"`
				Revoked    int `json:"revoked"`
			}
			raw, err := g.client().Do(cmd.Context(), http.MethodPost, "/v1/agents/suspend", map[string]string{"agent": args[0], "reason": reason}, &out)
			if err != nil {
				return err
			}
			g.emit(cmd.OutOrStdout(), raw, func(w io.Writer) {
				fmt.Fprintf(w, "agent\t%s\nsuspended\ttrue\ntasks_ended\t%d\nrevoked\t%d\n", shown(args[0]), out.TasksEnded, out.Revoked)
			})
			return nil
		},
	}
	suspend.Flags().StringVar(&reason, "reason", "", "why (kept in the audit trail)")
	unsuspend := &cobra.Command{
		Use:     "unsuspend ISSUER#SUB",
		Short:   "Let a suspended agent ask for tasks again",
		Example: `  errand agent unsuspend "https://agents.example.com#agent-1"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := g.client().Do(cmd.Context(), http.MethodPost, "/v1/agents/unsuspend", map[string]string{"agent": args[0]}, nil)
			if err != nil {
				return err
			}
			g.emit(cmd.OutOrStdout(), raw, func(w io.Writer) {
				fmt.Fprintf(w, "agent\t%s\nsuspended\tfalse\n", shown(args[0]))
			})
			return nil
		},
	}
	cmd.AddCommand(suspend, unsuspend)
	return cmd
}

func newSecretCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "secret",
		Short:   "Get Vault dynamic secrets for a task (as its agent)",
		Example: `  errand secret get "$TASK" --role orders-readonly -o json | jq -r .data.password`,
	}
	var role string
	get := &cobra.Command{
		Use:   "get TASK",
		Short: "Issue a Vault dynamic secret under an approved task: its data and lease, never a Vault token",
		Example: `  errand secret get "$TASK" --role orders-readonly
  errand secret get "$TASK" --role orders-readonly -o json | jq -r .data.password`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct {
				LeaseID       string         `json:"lease_id"`
				LeaseDuration int64          `json:"lease_duration"`
				Data          map[string]any `json:"data"`
			}
			raw, err := g.client().Do(cmd.Context(), http.MethodPost, "/v1/tasks/"+url.PathEscape(args[0])+"/secrets", map[string]string{"role": role}, &out)
			if err != nil {
				return err
			}
			g.emit(cmd.OutOrStdout(), raw, func(w io.Writer) {
				fmt.Fprintf(w, "lease_id\t%s\n", shown(out.LeaseID))
				fmt.Fprintf(w, "lease_duration\t%ds\n", out.LeaseDuration)
				keys := make([]string, 0, len(out.Data))
				for k := range out.Data {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					fmt.Fprintf(w, "data.%s\t%s\n", shown(k), shown(fmt.Sprint(out.Data[k])))
				}
			})
			return nil
		},
	}
	get.Flags().StringVar(&role, "role", "", "the Vault role configured for the task's scopes")
	_ = get.MarkFlagRequired("role")
	get.ValidArgsFunction = g.completeTasks
	cmd.AddCommand(get)
	return cmd
}

type feedEntry struct {
	Seq       int64  `json:"seq"`
	JTI       string `json:"jti"`
	TaskID    string `json:"task_id"`
	RevokedAt string `json:"revoked_at"`
	Reason    string `json:"reason"`
}

func newRevocationsCmd(g *globals) *cobra.Command {
	var (
		p      paging
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "revocations",
		Short: "Read the feedEntry feed, or follow it as revocations commit (as a resource server)",
		Long: `errand revocations reads GET /v1/revocations from --since (a position the feed
named: next_cursor, or a seq) on. --follow then keeps the Server-Sent Events stream
open and prints each feedEntry as it commits, one line each (one JSON object a
line with -o json), resuming from the last one seen when the stream ends or drops.`,
		Example: `  errand revocations --token "$RS" --all
  errand revocations --token "$RS" --since 1042 --follow -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if follow {
				return g.followRevocations(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), p.cursor)
			}
			pg, err := g.list(cmd.Context(), "/v1/revocations", nil, "revocations", "since", p)
			if err != nil {
				return err
			}
			revs, err := decodeItems[feedEntry](pg.items)
			if err != nil {
				return err
			}
			now := time.Now()
			g.emit(cmd.OutOrStdout(), pg.raw, func(w io.Writer) {
				fmt.Fprintln(w, "SEQ\tJTI\tTASK\tREVOKED\tREASON")
				for _, r := range revs {
					revocationRow(w, r, now)
				}
				moreNote(w, "since", pg.next)
			})
			return nil
		},
	}
	cmd.Flags().IntVar(&p.limit, "limit", 0, "page size (the server's default is 100, its maximum 1000)")
	cmd.Flags().StringVar(&p.cursor, "since", "", "start after this position (a next_cursor or seq)")
	cmd.Flags().BoolVar(&p.all, "all", false, "read every page to the feed's end")
	cmd.Flags().BoolVar(&follow, "follow", false, "keep the stream open and print revocations as they commit")
	return cmd
}

func revocationRow(w io.Writer, r feedEntry, now time.Time) {
	fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", r.Seq, shown(r.JTI), shown(r.TaskID), when(r.RevokedAt, now), shown(r.Reason))
}

// followRevocations prints the feedEntry stream until ctx ends, opening
// it again from the last event seen (Last-Event-ID) whenever it closes.
// A refusal (a problem document) ends it; a dropped connection is retried
// after a pause that grows to 30 s.
func (g *globals) followRevocations(ctx context.Context, out, errOut io.Writer, since string) error {
	c := g.client()
	c.HTTP.Timeout = 0 // a stream lasts minutes
	last := since
	pause := time.Second
	for {
		err := g.streamOnce(ctx, c, out, &last)
		if ctx.Err() != nil {
			return nil
		}
		var p *client.Problem
		if errors.As(err, &p) {
			return err
		}
		if err != nil {
			fmt.Fprintf(errOut, "errand: feedEntry stream: %v; again in %s\n", err, pause)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(pause):
			}
			pause = min(2*pause, 30*time.Second)
			continue
		}
		pause = time.Second
	}
}

// streamOnce reads one stream from *last on, moving *last past each event
// it prints.
func (g *globals) streamOnce(ctx context.Context, c *client.Client, out io.Writer, last *string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Server+"/v1/revocations/stream", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if *last != "" {
		req.Header.Set("Last-Event-ID", *last)
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		p := &client.Problem{Status: res.StatusCode, Raw: raw}
		if json.Unmarshal(raw, p) != nil || p.Code == "" {
			p.Code, p.Detail = "http_error", strings.TrimSpace(string(raw))
		}
		p.Status = res.StatusCode
		return p
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var id, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id:"):
			id = strings.TrimSpace(strings.TrimPrefix(line, "id:"))
		case strings.HasPrefix(line, "data:"):
			data += strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
		case line == "":
			if data != "" {
				if err := g.printStreamed(out, data); err != nil {
					return err
				}
			}
			if id != "" {
				*last = id
			}
			id, data = "", ""
		}
	}
	return sc.Err()
}

func (g *globals) printStreamed(out io.Writer, data string) error {
	switch g.output {
	case outputJSON:
		_, err := fmt.Fprintln(out, data)
		return err
	case outputYAML:
		_, err := fmt.Fprint(out, "---\n"+toYAML([]byte(data)))
		return err
	}
	var r feedEntry
	if err := json.Unmarshal([]byte(data), &r); err != nil {
		return fmt.Errorf("unexpected event: %w", err)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	revocationRow(tw, r, time.Now())
	return tw.Flush()
}

// completeTasks offers the ids of the caller's tasks (with their status
// and goal as descriptions) when --token or ERRAND_TOKEN is set; without
// one, or when the server cannot be asked, it offers nothing, quietly.
func (g *globals) completeTasks(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 || g.token == "" {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
	defer cancel()
	pg, err := g.list(ctx, "/v1/tasks", nil, "tasks", "cursor", paging{limit: 1000})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ts, _ := decodeItems[client.Task](pg.items)
	var out []string
	for _, t := range ts {
		if strings.HasPrefix(t.ID, prefix) {
			out = append(out, t.ID+"\t"+t.Status+" "+strconv.Quote(truncate(t.Goal, 50)))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeApprovals offers the ids of the caller's step-up approvals, as
// completeTasks does tasks.
func (g *globals) completeApprovals(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 || g.token == "" {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
	defer cancel()
	pg, err := g.list(ctx, "/v1/approvals", nil, "approvals", "cursor", paging{limit: 1000})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	as, _ := decodeItems[client.Approval](pg.items)
	var out []string
	for _, a := range as {
		if strings.HasPrefix(a.ID, prefix) {
			out = append(out, a.ID+"\t"+a.Status+" "+strings.Join(a.Scopes, " "))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
