package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/errandhq/errand/client"
)

// Exit codes: what a script can branch on without parsing a message.
const (
	exitOK       = 0
	exitFailure  = 1 // the server failed (5xx, 429), it could not be reached, or a check failed
	exitUsage    = 2 // the command line is wrong: unknown command or flag, bad argument
	exitAuth     = 3 // 401: no identity token, or one the server does not accept
	exitRefused  = 4 // 400, 403, 409, 422: refused by policy or an invariant, or decided against
	exitPending  = 5 // approval_required, or task wait timed out while the task is still pending
	exitNotFound = 6 // 404: no such task, approval or key (or not yours to see)
)

// exitCodesHelp is the table in errand --help and README.
const exitCodesHelp = `Exit codes:
  0  success
  1  server error (5xx, 429), server unreachable, or a failed check (audit verify)
  2  usage: unknown command or flag, missing or malformed argument
  3  authentication: no identity token, or the server does not accept it (401)
  4  refused: by policy, an invariant or a decision (400, 403, 409, 422; decide's deny;
     a task or approval decided against)
  5  approval pending: approval_required (a step-up approval waits for its user), or
     task wait's or approval wait's --timeout passed while still pending
  6  not found: no such task, approval or key, or not yours to see (404)

With -o json (or --json) or -o yaml, an error prints its problem document on stdout
(status, code, detail, and approval_id for approval_required) as well as the
one line on stderr.`

// usageError is a mistake on the command line (exit 2).
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// pendingError is a task or approval still undecided when the command had
// to stop waiting (exit 5).
type pendingError struct{ msg string }

func (p pendingError) Error() string { return p.msg }

// refusedError is a decision against the caller that is not an HTTP
// refusal: decide's deny, a task denied while waited for (exit 4).
// reported is true when the command already printed the answer that
// says so.
type refusedError struct {
	msg      string
	reported bool
}

func (r refusedError) Error() string { return r.msg }

// exitCode maps an error to the table above.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var p *client.Problem
	var u usageError
	var pe pendingError
	var re refusedError
	switch {
	case errors.As(err, &p):
		switch {
		case p.Code == "approval_required":
			return exitPending
		case p.Status == http.StatusUnauthorized:
			return exitAuth
		case p.Status == http.StatusNotFound:
			return exitNotFound
		case p.Status == http.StatusBadRequest, p.Status == http.StatusForbidden,
			p.Status == http.StatusConflict, p.Status == http.StatusUnprocessableEntity,
			p.Status == http.StatusRequestEntityTooLarge, p.Status == http.StatusUnsupportedMediaType,
			p.Status == http.StatusGone:
			return exitRefused
		}
		return exitFailure
	case errors.As(err, &u):
		return exitUsage
	case errors.As(err, &pe):
		return exitPending
	case errors.As(err, &re):
		return exitRefused
	}
	if cobraUsage(err) {
		return exitUsage
	}
	return exitFailure
}

// cobraUsage recognises the errors cobra returns for a command line it
// cannot run (the ones that do not pass through SetFlagErrorFunc or an
// Args validator).
func cobraUsage(err error) bool {
	msg := err.Error()
	for _, prefix := range []string{"unknown command", "required flag(s)", "if any flags in the group",
		"at least one of the flags", "unknown flag", "unknown shorthand flag", "invalid argument"} {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	return false
}

// markUsage makes every flag and argument mistake under root a usageError.
func markUsage(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error {
				if err := args(cmd, a); err != nil {
					return usageError{err}
				}
				return nil
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// execute runs the errand command line args, prints an error as main
// does, and returns the exit code.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root, g := newRootWithGlobals()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	var re refusedError
	if g.machine() && !(errors.As(err, &re) && re.reported) {
		g.emit(stdout, problemDocument(err, code), nil)
	}
	fmt.Fprintln(stderr, "errand:", err)
	return code
}

// problemDocument is the server's problem document for a refusal, or one
// in its shape (RFC 9457) for an error of the command itself.
func problemDocument(err error, code int) []byte {
	var p *client.Problem
	if errors.As(err, &p) && len(p.Raw) > 0 && json.Valid(p.Raw) {
		return p.Raw
	}
	if errors.As(err, &p) {
		raw, _ := json.Marshal(p)
		return raw
	}
	name := map[int]string{exitUsage: "usage", exitPending: "approval_pending", exitRefused: "refused"}[code]
	if name == "" {
		name = "error"
	}
	raw, _ := json.Marshal(map[string]any{"code": name, "detail": err.Error(), "exit_code": code})
	return raw
}

// structuredOutput names the commands that print with -o json and yaml:
// the client commands, which print the server's answers, and keys. The
// others (serve, audit verify and export, config check…) print text of
// their own, and refuse -o json or yaml rather than ignore it.
var structuredOutput = []string{"errand task", "errand token", "errand approval", "errand decide", "errand agent", "errand keys", "errand version", "errand dev token",
	"errand secret", "errand revocations", "errand audit events", "errand audit credentials"}

// checkOutput refuses -o json or yaml on a command that cannot honour it.
func (g *globals) checkOutput(cmd *cobra.Command, _ []string) error {
	if !g.machine() {
		return nil
	}
	path := cmd.CommandPath()
	for _, p := range structuredOutput {
		if path == p || strings.HasPrefix(path, p+" ") {
			return nil
		}
	}
	return usageErrorf("%s prints text only: -o %s (or --json) applies to task, token, approval, decide, agent, secret, revocations, audit events, audit credentials, keys, version and dev token", path, g.output)
}
