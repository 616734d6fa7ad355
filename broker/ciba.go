package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// OpenID Client-Initiated Backchannel Authentication (CIBA) Core 1.0, poll
// mode: an agent asks for a task through the backchannel authentication
// endpoint and polls the token endpoint with the auth_req_id until the
// user decides (§7, §11). The auth_req_id is not the task id: it is 256
// random bits, kept only as its SHA-256 digest, bound to the task and to
// the agent that asked, and good for one token.

// Polling intervals (CIBA §7.3, §11): an agent starts with
// BackchannelInterval and each slow_down adds BackchannelIntervalStep, up
// to BackchannelIntervalMax.
const (
	BackchannelInterval     = 5 * time.Second
	BackchannelIntervalStep = 5 * time.Second
	BackchannelIntervalMax  = 60 * time.Second
	maxBindingMessageBytes  = 256
	// authReqIDLen is the length of an auth_req_id: 32 random bytes in
	// unpadded base32.
	authReqIDLen = 52
)

// BackchannelRequest is the polling state of one backchannel
// authentication request, shared by replicas through the store.
type BackchannelRequest struct {
	// IDHash is HashID of the auth_req_id; the id itself is never kept.
	IDHash         string
	TaskID         string
	Agent          Ref
	BindingMessage string
	Interval       time.Duration // whole seconds
	CreatedAt      time.Time
	ExpiresAt      time.Time
	LastPollAt     time.Time // zero until the first poll
	RedeemedAt     time.Time // zero until a token was issued for it
}

// BackchannelTx is what CIBA needs of a transaction.
type BackchannelTx interface {
	InsertBackchannel(ctx context.Context, r BackchannelRequest) error
	// LockBackchannel reads the request whose id hashes to idHash and
	// locks it until the transaction ends; ErrNotFound.
	LockBackchannel(ctx context.Context, idHash string) (BackchannelRequest, error)
	// UpdateBackchannel writes r's Interval, LastPollAt and RedeemedAt.
	UpdateBackchannel(ctx context.Context, r BackchannelRequest) error
}

// BackchannelStart is a backchannel authentication request: the task it
// asks for (CreateTaskRequest; Goal from the errand_task authorization
// details, Audiences the RFC 8707 resource indicators, resolved by
// Catalog.ResolveResource) and the binding message, which stands for the
// goal when none is given.
type BackchannelStart struct {
	Task           CreateTaskRequest
	BindingMessage string
}

// BackchannelStarted is the answer of CIBA §7.3.
type BackchannelStarted struct {
	AuthReqID string
	ExpiresIn int64 // seconds
	Interval  int64 // seconds
	Task      Task
}

// StartBackchannel creates the task exactly as CreateTask does (the same
// checks, policies and task.created event) and, in the same transaction,
// the backchannel request that polls for it.
func (s *Service) StartBackchannel(ctx context.Context, p Principal, req BackchannelStart) (_ BackchannelStarted, err error) {
	defer func() { err = s.refused(ctx, p, "", OpBackchannel, err) }()
	if p.Kind != KindAgent {
		return BackchannelStarted{}, Errorf(ErrWrongPrincipalKind, "only agents ask for tasks")
	}
	// The scopes first, as CreateTask will check them again: a stock
	// client learns of a bad scope as invalid_scope, whatever else is
	// missing.
	scopes, err := ParseScopes(req.Task.Scopes)
	if err != nil {
		return BackchannelStarted{}, err
	}
	if err := s.catalog.CheckGrantable(scopes); err != nil {
		return BackchannelStarted{}, err
	}
	if err := checkText("binding_message", req.BindingMessage, maxBindingMessageBytes, false); err != nil {
		return BackchannelStarted{}, err
	}
	if req.Task.Goal == "" {
		req.Task.Goal = req.BindingMessage
	}
	// RFC 8707 resource indicators name configured audiences.
	auds := make([]string, 0, len(req.Task.Audiences))
	for _, raw := range req.Task.Audiences {
		a, err := s.catalog.ResolveResource(raw)
		if err != nil {
			return BackchannelStarted{}, err
		}
		auds = append(auds, a)
	}
	req.Task.Audiences = auds
	id, err := s.newAuthReqID()
	if err != nil {
		return BackchannelStarted{}, err
	}
	t, err := s.createTask(ctx, p, req.Task, func(tx Tx, t Task) error {
		return tx.InsertBackchannel(ctx, BackchannelRequest{
			IDHash: HashID(id), TaskID: t.ID, Agent: t.Agent, BindingMessage: req.BindingMessage,
			Interval: BackchannelInterval, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt,
		})
	})
	if err != nil {
		return BackchannelStarted{}, err
	}
	return BackchannelStarted{
		AuthReqID: id, ExpiresIn: int64(t.ExpiresAt.Sub(t.CreatedAt) / time.Second),
		Interval: int64(BackchannelInterval / time.Second), Task: t,
	}, nil
}

func (s *Service) newAuthReqID() (string, error) {
	var b [32]byte
	if _, err := io.ReadFull(s.random, b[:]); err != nil {
		return "", fmt.Errorf("broker: random: %w", err)
	}
	return idEncoding.EncodeToString(b[:]), nil
}

func validAuthReqID(id string) bool {
	if len(id) != authReqIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// PollBackchannel is the CIBA grant at the token endpoint (§10.1, §11).
// Only the agent that asked may poll; any other caller, an unknown or
// malformed id, and an id that already gave its token are ErrInvalidGrant,
// alike. A poll sooner than the interval after the previous one is
// ErrSlowDown and the interval grows; then, by the task's state at the
// database's time: pending is ErrAuthorizationPending, denied
// ErrAccessDenied, past its expiry ErrExpiredToken, closed or revoked
// ErrInvalidGrant. The polling state commits whatever the answer, so
// replicas agree on it.
//
// Once approved, the token is minted by Mint (every check, policy, budget
// and audit event of a mint) for the approved scopes and the first
// requested audience the approval kept, bound to the DPoP key jkt when
// the poll proved one, under an idempotency key derived
// from the request, so that concurrent polls get the same credential;
// then the request is spent.
func (s *Service) PollBackchannel(ctx context.Context, p Principal, authReqID, jkt string) (_ Minted, err error) {
	defer func() { err = s.refused(ctx, p, "", OpPoll, err) }()
	if p.Kind != KindAgent {
		return Minted{}, Errorf(ErrWrongPrincipalKind, "only agents poll backchannel requests")
	}
	if !validAuthReqID(authReqID) {
		return Minted{}, Errorf(ErrInvalidGrant, "unknown auth_req_id")
	}
	hash := HashID(authReqID)
	var (
		task    Task
		outcome error
	)
	err = s.store.InTx(ctx, func(tx Tx) error {
		outcome = nil
		r, err := tx.LockBackchannel(ctx, hash)
		switch {
		case errors.Is(err, ErrNotFound):
			outcome = Errorf(ErrInvalidGrant, "unknown auth_req_id")
			return nil
		case err != nil:
			return err
		case !p.Is(KindAgent, r.Agent):
			outcome = Errorf(ErrInvalidGrant, "unknown auth_req_id")
			return nil
		case !r.RedeemedAt.IsZero():
			outcome = refusalOf(ErrInvalidGrant, r.TaskID, "the auth_req_id was used")
			return nil
		}
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		if !now.Before(r.ExpiresAt) {
			outcome = refusalOf(ErrExpiredToken, r.TaskID, "the backchannel request expired")
			return nil
		}
		early := !r.LastPollAt.IsZero() && now.Before(r.LastPollAt.Add(r.Interval))
		if early {
			r.Interval = min(r.Interval+BackchannelIntervalStep, BackchannelIntervalMax)
		}
		r.LastPollAt = now
		if err := tx.UpdateBackchannel(ctx, r); err != nil {
			return err
		}
		if early {
			outcome = refusalOf(ErrSlowDown, r.TaskID, fmt.Sprintf("polled sooner than the interval; wait %d s", r.Interval/time.Second))
			return nil
		}
		if task, err = tx.LockTask(ctx, r.TaskID); err != nil {
			return err
		}
		switch st := task.EffectiveStatus(now); st {
		case StatusApproved:
		case StatusPending:
			outcome = refusalOf(ErrAuthorizationPending, r.TaskID, "the user has not decided yet")
		case StatusDenied:
			outcome = refusalOf(ErrAccessDenied, r.TaskID, "the user denied the request")
		case StatusExpired:
			outcome = refusalOf(ErrExpiredToken, r.TaskID, "the task expired")
		default:
			outcome = refusalOf(ErrInvalidGrant, r.TaskID, "the task is "+string(st))
		}
		return nil
	})
	if err != nil {
		return Minted{}, err
	}
	if outcome != nil {
		return Minted{}, outcome
	}
	m, err := s.mint(ctx, p, task.ID, MintRequest{
		Scopes: task.ApprovedScopes.Strings(), Audience: firstApproved(task),
		IdempotencyKey: "ciba-" + hash[:40], JKT: jkt,
	})
	if err != nil {
		return Minted{}, err
	}
	// The credential is recorded; the request is spent. Should this write
	// fail, a later poll gets the same credential back (the idempotency
	// key), never a second one.
	_ = s.store.InTx(ctx, func(tx Tx) error {
		r, err := tx.LockBackchannel(ctx, hash)
		if err != nil {
			return err
		}
		now, err := s.txNow(ctx, tx)
		if err != nil {
			return err
		}
		r.RedeemedAt = now
		return tx.UpdateBackchannel(ctx, r)
	})
	return m, nil
}

// refusalOf is a refusal about a task: the task id goes to the audit
// event, never to the answer.
func refusalOf(sentinel *Error, taskID, detail string) error {
	return &Error{Code: sentinel.Code, Detail: detail, TaskID: taskID}
}
