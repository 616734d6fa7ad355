package broker

import (
	"context"
	"encoding/json"
	"slices"
	"time"
)

// NoticeTypes are the events a webhook may subscribe to: those that a
// person may have to act on or know of.
var NoticeTypes = []string{
	EventTaskCreated, EventApprovalRequested, EventTaskApproved, EventTaskDenied,
	EventTaskClosed, EventBackendRevokeFail,
}

// Webhook is a configured receiver of notices, as the broker sees it: a
// stable key (never its URL, which may itself be a secret) and the event
// types it subscribes to.
type Webhook struct {
	Key    string
	Events []string
}

// Notice is what a notification reports: a snapshot of the task (and of
// the step-up approval, for approval.requested) taken in the transaction
// of the change, so that every attempt sends the same body. It carries no
// credential: no token, no jti, no lease id, no secret. Goal, Tool,
// Dataset and the step-up's ApprovalTool and ApprovalDataset are the
// agent's words; Reason is the denying user's words (or Errand's, when
// the approval window elapsed).
type Notice struct {
	Type   string    `json:"type"`
	Time   time.Time `json:"time"`
	Actor  Actor     `json:"actor"`
	TaskID string    `json:"task_id"`
	Status Status    `json:"status"`
	// Agent and User are written as Errand names them in tokens (Naming).
	Agent          string    `json:"agent"`
	User           string    `json:"user"`
	Goal           string    `json:"goal"`
	Tool           string    `json:"tool,omitempty"`
	Dataset        string    `json:"dataset,omitempty"`
	Risk           Risk      `json:"risk"`
	Scopes         []string  `json:"scopes"`
	Audiences      []string  `json:"audiences"`
	ApprovedScopes []string  `json:"approved_scopes,omitempty"`
	ExpiresAt      time.Time `json:"expires_at"`
	Reason         string    `json:"reason,omitempty"`
	// Revoked counts the credentials a close revoked.
	Revoked int `json:"revoked,omitempty"`
	// The step-up approval of approval.requested.
	ApprovalID        string    `json:"approval_id,omitempty"`
	ApprovalScopes    []string  `json:"approval_scopes,omitempty"`
	ApprovalAudience  string    `json:"approval_audience,omitempty"`
	ApprovalTool      string    `json:"approval_tool,omitempty"`
	ApprovalDataset   string    `json:"approval_dataset,omitempty"`
	ApprovalExpiresAt time.Time `json:"approval_expires_at,omitzero"`
	// The unconfirmed backend revocation of backend.revoke_failed.
	BackendKind     string    `json:"backend_kind,omitempty"`
	BackendAttempts int       `json:"backend_attempts,omitempty"`
	BackendSince    time.Time `json:"backend_since,omitzero"`
}

// Delivery is one notice on its way to one webhook: a row of the durable
// outbox of notifications, keyed by (MsgID, Webhook). MsgID is the
// Standard Webhooks webhook-id, the same on every attempt.
type Delivery struct {
	MsgID         string
	Webhook       string
	Type          string
	TaskID        string
	Notice        []byte // the Notice as JSON
	CreatedAt     time.Time
	Attempts      int
	NextAttemptAt time.Time
	LastError     string
}

// NoticeTx is what notifications need of a transaction.
type NoticeTx interface {
	// EnqueueDeliveries queues a notice, once per webhook, in the
	// transaction of the change it reports.
	EnqueueDeliveries(ctx context.Context, ds []Delivery) error
	// FailDelivery marks a delivery failed at `at` and reports whether it
	// did: false when it is already done or failed (another replica
	// delivered or gave it up), so that the failure is raised once.
	FailDelivery(ctx context.Context, d Delivery, at time.Time, errMsg string) (bool, error)
}

// Deliveries is the store side of the notification worker.
type Deliveries interface {
	// ClaimDeliveries leases up to limit deliveries to webhook due at now
	// for lease (other replicas skip them meanwhile), counting an attempt
	// for each, oldest first.
	ClaimDeliveries(ctx context.Context, webhook string, now time.Time, lease time.Duration, limit int) ([]Delivery, error)
	// CompleteDelivery marks a delivery done, unless it was claimed again
	// since (its attempts moved on).
	CompleteDelivery(ctx context.Context, d Delivery, at time.Time) error
	// RetryDelivery records a failed attempt and when to try again,
	// unless it was claimed again since or is done.
	RetryDelivery(ctx context.Context, d Delivery, next time.Time, errMsg string) error
	// PruneDeliveries deletes up to limit deliveries done or given up
	// before `before` (they are not history: the audit log is), and
	// returns how many.
	PruneDeliveries(ctx context.Context, before time.Time, limit int) (int, error)
}

// Notifies reports whether any webhook subscribes to the event type.
func (s *Service) Notifies(typ string) bool {
	for _, w := range s.webhooks {
		if slices.Contains(w.Events, typ) {
			return true
		}
	}
	return false
}

// notify queues n for every webhook subscribed to its type, in tx.
func (s *Service) notify(ctx context.Context, tx Tx, n Notice) error {
	var hooks []string
	for _, w := range s.webhooks {
		if slices.Contains(w.Events, n.Type) {
			hooks = append(hooks, w.Key)
		}
	}
	if len(hooks) == 0 {
		return nil
	}
	body, err := json.Marshal(n)
	if err != nil {
		return err
	}
	id, err := s.newID("msg_")
	if err != nil {
		return err
	}
	ds := make([]Delivery, len(hooks))
	for i, h := range hooks {
		ds[i] = Delivery{MsgID: id, Webhook: h, Type: n.Type, TaskID: n.TaskID, Notice: body,
			CreatedAt: n.Time, NextAttemptAt: n.Time}
	}
	return tx.EnqueueDeliveries(ctx, ds)
}

// taskNotice is the notice of typ about t, at now, caused by actor.
func (s *Service) taskNotice(typ string, t Task, now time.Time, actor Actor) Notice {
	return Notice{
		Type: typ, Time: now, Actor: actor, TaskID: t.ID, Status: t.Status,
		Agent: s.names.Agent(t.Agent), User: s.names.User(t.User),
		Goal: t.Goal, Tool: t.Tool, Dataset: t.Dataset, Risk: t.Risk,
		Scopes: nonNilStrings(t.Scopes.Strings()), Audiences: nonNilStrings(t.Audiences),
		ApprovedScopes: t.ApprovedScopes.Strings(), ExpiresAt: t.ExpiresAt,
	}
}

// RecordDeliveryFailure raises notification.failed for a delivery given
// up, once, and marks it failed in the same transaction. It names the
// webhook by its key and the message by its id; the body and the URL stay
// out of the audit trail.
func (s *Service) RecordDeliveryFailure(ctx context.Context, d Delivery, cause string) error {
	return s.store.InTx(ctx, func(tx Tx) error {
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		failed, err := tx.FailDelivery(ctx, d, now, cause)
		if err != nil || !failed {
			return err
		}
		return tx.AppendAudit(ctx, AuditEvent{Time: now, Type: EventNotificationFailed, Actor: SystemActor, TaskID: d.TaskID,
			Detail: detail(map[string]any{"webhook": d.Webhook, "webhook_id": d.MsgID, "event": d.Type,
				"attempts": d.Attempts, "since": d.CreatedAt, "error": cause})})
	})
}
