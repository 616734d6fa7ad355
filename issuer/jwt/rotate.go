package jwt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/errandhq/errand/broker"
)

// JWKSMaxAge is how long clients may cache the JWKS (its Cache-Control).
const JWKSMaxAge = 5 * time.Minute

// KeyPolicy is when signing keys rotate.
type KeyPolicy struct {
	// RotateEvery is how long a key signs before the next one takes over;
	// 0 rotates only on demand (errand keys rotate).
	RotateEvery time.Duration
	// Overlap is how long a key keeps verifying (and stays in the JWKS)
	// after it stopped signing: at least the longest token life plus the
	// JWKS cache time, so no token still in use meets an unknown kid.
	Overlap time.Duration
}

// MinNextAge is how long a next key must have been published before it
// signs: every cached JWKS (5 min) and every replica's key reload have
// had it by then.
const MinNextAge = JWKSMaxAge + 30*time.Second

// ErrNextTooYoung refuses an on-demand rotation to a key resource servers
// may not have yet.
var ErrNextTooYoung = errors.New("the next key was published too recently")

// MinOverlap is the shortest overlap that keeps every token verifiable
// for its whole life, whatever JWKS a resource server cached.
func MinOverlap(tokenTTLMax time.Duration) time.Duration {
	return tokenTTLMax + JWKSMaxAge + Leeway
}

// Maintain brings the keys to the policy: a next key is published (so
// that resource servers cache it before it signs), the current key is
// rotated once it has signed for RotateEvery, and previous keys past the
// overlap are retired. Replicas may all call it: the store serialises
// them and each decides on what it reads under the lock.
func (i *Issuer) Maintain(ctx context.Context, p KeyPolicy) (broker.KeyChange, error) {
	return i.change(ctx, true, func(keys []broker.SigningKey, now time.Time) (broker.KeyChange, error) {
		return i.plan(keys, now, p, rotateIfDue, broker.SystemActor)
	})
}

// Rotate rotates now, on demand: next becomes current, current previous
// (verifying for the overlap), and a new next is published. Unless force,
// it refuses when the next key was published less than MinNextAge ago (or
// is missing): resource servers may not have it yet. force is for a key
// believed compromised, when tokens refused for a few minutes are the
// lesser harm.
func (i *Issuer) Rotate(ctx context.Context, p KeyPolicy, actor broker.Actor, force bool) (broker.KeyChange, error) {
	mode := rotateNow
	if force {
		mode = rotateForce
	}
	return i.change(ctx, true, func(keys []broker.SigningKey, now time.Time) (broker.KeyChange, error) {
		return i.plan(keys, now, p, mode, actor)
	})
}

type rotateMode int

const (
	rotateIfDue rotateMode = iota // on schedule, once the next key is old enough
	rotateNow                     // on demand, if the next key is old enough
	rotateForce                   // on demand, whatever the next key's age
)

// Retire retires one key at once (a key believed compromised): tokens it
// signed stop verifying. The current key cannot be retired (rotate first)
// unless it is refused (see Reload): retiring is how a refused key is
// taken out, since no key row is ever deleted. Retiring publishes and
// uses nothing, so it goes ahead whatever other keys are refused.
func (i *Issuer) Retire(ctx context.Context, kid string, actor broker.Actor) (broker.KeyChange, error) {
	return i.change(ctx, false, func(keys []broker.SigningKey, now time.Time) (broker.KeyChange, error) {
		for _, k := range keys {
			if k.KID != kid {
				continue
			}
			reason := "retired on demand"
			switch k.State {
			case broker.KeyCurrent:
				if !i.refusedAmong(k, keys) {
					return broker.KeyChange{}, errors.New("the current key signs: rotate first, then retire it")
				}
				reason = "refused current key retired on demand"
			case broker.KeyRetired:
				return broker.KeyChange{}, nil
			}
			c := broker.KeyChange{States: map[string]string{kid: broker.KeyRetired}}
			c.Events = []broker.AuditEvent{keysEvent(now, actor, reason, c)}
			return c, nil
		}
		return broker.KeyChange{}, fmt.Errorf("no key %q", kid)
	})
}

// refusedAmong reports whether k is refused while system_secret is right
// (another stored key opens): with a wrong secret every key looks refused,
// and the current key must not be retired for that.
func (i *Issuer) refusedAmong(k broker.SigningKey, keys []broker.SigningKey) bool {
	if _, r := i.openKey(k); r == nil {
		return false
	}
	for _, o := range keys {
		if o.KID != k.KID && o.State != broker.KeyRetired {
			if _, r := i.openKey(o); r == nil {
				return true
			}
		}
	}
	return false
}

// change runs plan in the store's key transaction. When checked, a stored
// set with a refused key is left as it is (a refused next key must never
// become current): the alarm's audit events commit instead, and the
// refusal is the error.
func (i *Issuer) change(ctx context.Context, checked bool, plan func([]broker.SigningKey, time.Time) (broker.KeyChange, error)) (broker.KeyChange, error) {
	var (
		refused refusedKeys
		rows    [][32]byte
	)
	c, err := i.cfg.Keys.ChangeKeys(ctx, func(keys []broker.SigningKey, now time.Time) (broker.KeyChange, error) {
		refused, rows = nil, nil
		if checked {
			if _, err := i.openAll(keys); err != nil {
				if refused = refusals(err); len(refused) == 0 {
					return broker.KeyChange{}, err
				}
				var events []broker.AuditEvent
				events, rows = i.alarmEvents(refused, now)
				return broker.KeyChange{Events: events}, nil
			}
		}
		return plan(keys, now)
	})
	if err != nil {
		return broker.KeyChange{}, err
	}
	if len(refused) > 0 {
		i.markAudited(rows)
		return broker.KeyChange{}, refused
	}
	if !c.Empty() && i.serving {
		if err := i.Reload(ctx); err != nil {
			return c, err
		}
	}
	return c, nil
}

// plan decides a key change on the keys as stored at now.
func (i *Issuer) plan(keys []broker.SigningKey, now time.Time, p KeyPolicy, mode rotateMode, actor broker.Actor) (broker.KeyChange, error) {
	force := mode != rotateIfDue
	var next, current *broker.SigningKey
	var previous []broker.SigningKey
	for j := range keys {
		switch keys[j].State {
		case broker.KeyNext:
			next = &keys[j]
		case broker.KeyCurrent:
			current = &keys[j]
		case broker.KeyPrevious:
			previous = append(previous, keys[j])
		}
	}
	c := broker.KeyChange{States: map[string]string{}}
	var why []string
	ripe := next != nil && !now.Before(next.CreatedAt.Add(MinNextAge))
	due := force || current == nil
	if !due && p.RotateEvery > 0 {
		since := current.ActivatedAt
		if since.IsZero() {
			since = current.CreatedAt
		}
		due = !now.Before(since.Add(p.RotateEvery))
	}
	switch {
	case due && mode == rotateNow && !ripe && current != nil:
		age := "none is published"
		if next != nil {
			age = "it was published " + now.Sub(next.CreatedAt).Round(time.Second).String() + " ago"
		}
		return broker.KeyChange{}, fmt.Errorf("%w: %s, and resource servers may cache the JWKS for %s; rotate after %s, or with --force for a key believed compromised",
			ErrNextTooYoung, age, JWKSMaxAge, MinNextAge)
	case due && mode == rotateIfDue && !ripe && current != nil:
		// Not yet: the next key is published (below) and signs once every
		// cached JWKS has it.
		due = false
	}
	if due {
		if next == nil {
			k, err := i.newKey(broker.KeyCurrent)
			if err != nil {
				return broker.KeyChange{}, err
			}
			c.Insert = append(c.Insert, k)
		} else {
			c.States[next.KID] = broker.KeyCurrent
		}
		if current != nil {
			c.States[current.KID] = broker.KeyPrevious
		}
		next = nil
		why = append(why, map[bool]string{true: "rotated on demand", false: "rotated on schedule"}[force])
	}
	if next == nil {
		k, err := i.newKey(broker.KeyNext)
		if err != nil {
			return broker.KeyChange{}, err
		}
		c.Insert = append(c.Insert, k)
		why = append(why, "next key published")
	}
	for _, k := range previous {
		if !k.DeactivatedAt.IsZero() && !now.Before(k.DeactivatedAt.Add(p.Overlap)) {
			c.States[k.KID] = broker.KeyRetired
		}
	}
	if len(c.Insert) == 0 && len(c.States) == 0 {
		return broker.KeyChange{}, nil
	}
	reason := "previous keys past the overlap retired"
	if len(why) > 0 {
		reason = why[0]
	}
	c.Events = []broker.AuditEvent{keysEvent(now, actor, reason, c)}
	return c, nil
}

func keysEvent(now time.Time, actor broker.Actor, reason string, c broker.KeyChange) broker.AuditEvent {
	states := map[string]string{}
	for kid, st := range c.States {
		states[kid] = st
	}
	for _, k := range c.Insert {
		states[k.KID] = k.State
	}
	d, _ := json.Marshal(map[string]any{"reason": reason, "keys": states})
	return broker.AuditEvent{Time: now, Type: broker.EventKeysChanged, Actor: actor, Detail: d}
}

// newKey generates and seals a key in state st.
func (i *Issuer) newKey(st string) (broker.SigningKey, error) {
	priv, err := generate(i.cfg.Alg)
	if err != nil {
		return broker.SigningKey{}, err
	}
	kid, err := kidOf(priv.Public())
	if err != nil {
		return broker.SigningKey{}, err
	}
	jwk, err := publicJWK(priv.Public(), kid, i.cfg.Alg)
	if err != nil {
		return broker.SigningKey{}, err
	}
	sealed, err := i.sealer.seal(priv, kid)
	if err != nil {
		return broker.SigningKey{}, err
	}
	return broker.SigningKey{KID: kid, Alg: i.cfg.Alg, Private: sealed, PublicJWK: jwk, State: st, CreatedAt: i.cfg.Now().UTC()}, nil
}

// Run keeps this replica's keys current: it reloads them every reload
// (so a rotation made by another replica or by errand keys rotate is
// picked up without restart, and a retired key stops verifying), and
// applies the policy every maintain.
func (i *Issuer) Run(ctx context.Context, p KeyPolicy, reload, maintain time.Duration, log *slog.Logger) error {
	rt, mt := time.NewTicker(reload), time.NewTicker(maintain)
	defer rt.Stop()
	defer mt.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-rt.C:
			if err := i.Reload(ctx); err != nil && ctx.Err() == nil {
				log.Warn("signing keys: reload failed; the keys loaded stay in use", "err", err)
			}
		case <-mt.C:
			c, err := i.Maintain(ctx, p)
			switch {
			case err != nil && ctx.Err() == nil:
				log.Warn("signing keys: rotation check failed", "err", err)
			case !c.Empty():
				log.Info("signing keys changed", "keys", c.States, "inserted", len(c.Insert))
			}
		}
	}
}
