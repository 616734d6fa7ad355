// Package web serves Errand's pages for people: the queue of tasks and
// step-up approvals waiting for the signed-in user, a task's page and an
// approval's page where they approve (all, or a narrower part) or deny,
// and the auditors' history with a chart of issuance and refusals.
//
// The pages are rendered on the server with html/template from embedded
// templates and one embedded stylesheet: no build step and no script, so
// that they work without JavaScript and run under a Content-Security-Policy
// that allows no script at all and no framing (P04, P05).
//
// A page does nothing the REST API would not do for the same person: every
// decision is the same broker.Service call, refused with the same code and
// status and audited the same way (by the Service; the pages' own
// refusals through API, the REST server's), so that a page never shows, approves or widens more than the
// API would (P06). A state change is only ever a POST that carries the
// session's CSRF token from a page of Errand's own origin (P01).
//
// What a page shows first is what the decision grants, read from the
// catalog and the task's record: each scope with its action's class, risk
// and description and whether the viewer's grants cover it, the audiences
// with their environment, the expiry, the tool and dataset. The agent's
// own words (the goal) come after, apart and visibly quoted, with every
// character that could reorder or break the text shown as an escape.
package web
