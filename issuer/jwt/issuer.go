package jwt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"

	"github.com/errandhq/errand/broker"
)

// MaxTokenBytes bounds a token accepted for verification.
const MaxTokenBytes = 8 << 10

// Leeway is the clock skew tolerated on iat, nbf and exp of Errand's own
// tokens when verifying them.
const Leeway = 30 * time.Second

// TokenType is the `typ` header of every access token (RFC 9068 §2.1).
const TokenType = "at+jwt"

// Config configures an Issuer.
type Config struct {
	// Issuer is Errand's public URL, the `iss` of every token.
	Issuer string
	Keys   broker.KeyStore
	// Secret is system_secret; it seals the private keys in the store.
	Secret []byte
	// Alg is the algorithm of a newly generated key: EdDSA (default) or ES256.
	Alg string
	Now func() time.Time
	// ReloadInterval bounds how often an unknown kid may trigger a reload
	// of the keys from the store; default 10 s.
	ReloadInterval time.Duration
	// Logger receives the alarm of a refused stored key (at ERROR);
	// default: discarded.
	Logger *slog.Logger
}

// Issuer signs and verifies access tokens.
type Issuer struct {
	cfg    Config
	sealer *sealer

	reloadMu   sync.Mutex
	mu         sync.RWMutex
	current    *key
	byKID      map[string]*key
	jwks       []byte
	lastReload time.Time

	// verified remembers tokens whose signature and claims verified, by
	// the SHA-256 of the token, with their key: introspection asks about
	// the same token again and again. An entry is used only while its key
	// is still held and the token unexpired; the database still decides
	// whether it is revoked.
	vmu      sync.RWMutex
	verified map[[32]byte]verifiedToken

	// serving is set by New: the keys are loaded and kept loaded.
	serving bool
	// seen and audited name the refused rows already logged and already
	// recorded in the audit trail (by keyRefusal.row); refused counts
	// the rows seen.
	amu     sync.Mutex
	seen    map[[32]byte]bool
	audited map[[32]byte]bool
	refused atomic.Uint64
}

type verifiedToken struct {
	kid string
	at  broker.AccessToken
}

// maxVerified bounds the verified-token cache.
const maxVerified = 65536

var _ broker.TokenIssuer = (*Issuer)(nil)

// New loads the signing keys from the store, generating and storing the
// first one if there is none. Replicas racing here end up with one key:
// the store keeps the first current key and the others load it. A stored
// set with a refused key (see Reload) is an error.
func New(ctx context.Context, cfg Config) (*Issuer, error) {
	i, err := NewOffline(cfg)
	if err != nil {
		return nil, err
	}
	i.serving = true
	if err := i.Reload(ctx); err != nil {
		return nil, err
	}
	if i.current == nil {
		if err := i.createKey(ctx); err != nil {
			return nil, err
		}
		if err := i.Reload(ctx); err != nil {
			return nil, err
		}
	}
	if i.current == nil {
		return nil, errors.New("jwt: no current signing key after creating one")
	}
	return i, nil
}

// NewOffline returns an Issuer that loads no key and signs nothing, for
// errand keys: it lists, rotates and retires the stored keys, and so can
// retire a refused key that would stop New.
func NewOffline(cfg Config) (*Issuer, error) {
	if cfg.Issuer == "" || cfg.Keys == nil {
		return nil, errors.New("jwt: Issuer and Keys are required")
	}
	if cfg.Alg == "" {
		cfg.Alg = AlgEdDSA
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReloadInterval <= 0 {
		cfg.ReloadInterval = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := newSealer(cfg.Secret)
	if err != nil {
		return nil, err
	}
	return &Issuer{cfg: cfg, sealer: s}, nil
}

func (i *Issuer) createKey(ctx context.Context) error {
	priv, err := generate(i.cfg.Alg)
	if err != nil {
		return err
	}
	kid, err := kidOf(priv.Public())
	if err != nil {
		return err
	}
	jwk, err := publicJWK(priv.Public(), kid, i.cfg.Alg)
	if err != nil {
		return err
	}
	sealed, err := i.sealer.seal(priv, kid)
	if err != nil {
		return err
	}
	_, err = i.cfg.Keys.InsertCurrentKey(ctx, broker.SigningKey{
		KID: kid, Alg: i.cfg.Alg, Private: sealed, PublicJWK: jwk, CreatedAt: i.cfg.Now().UTC(),
	})
	return err
}

// Reload reads the keys from the store. Reloads are serialised, so an
// older read never replaces a newer one. Every key but the retired ones
// must prove to be the key its row claims (openKey): a set with a refused
// key raises the alarm (an ERROR line, errand_signing_keys_refused_total,
// a keys.refused audit event) and is refused as a whole, like a set
// without a current key, and the keys in use stay. The JWKS is built from
// the private keys, never from the stored public halves.
func (i *Issuer) Reload(ctx context.Context) error {
	i.reloadMu.Lock()
	defer i.reloadMu.Unlock()
	stored, err := i.cfg.Keys.SigningKeys(ctx)
	if err != nil {
		return err
	}
	keys, err := i.openAll(stored)
	if err != nil {
		if refused := refusals(err); len(refused) > 0 {
			i.raise(ctx, refused)
		}
		return err
	}
	byKID := make(map[string]*key, len(keys))
	var current *key
	pubs := []json.RawMessage{}
	for _, k := range keys {
		byKID[k.kid] = k
		pubs = append(pubs, k.jwk)
		if k.state == broker.KeyCurrent {
			current = k
		}
	}
	if current == nil && len(stored) > 0 {
		return errors.New("jwt: the stored keys have no current key; keeping the keys in use")
	}
	jwks, err := json.Marshal(map[string]any{"keys": pubs})
	if err != nil {
		return err
	}
	i.mu.Lock()
	i.current, i.byKID, i.jwks, i.lastReload = current, byKID, jwks, i.cfg.Now()
	i.mu.Unlock()
	return nil
}

// refusedKeys is the error of a stored set holding refused keys.
type refusedKeys []*keyRefusal

func (r refusedKeys) Error() string {
	msg := "jwt: " + r[0].Error()
	if len(r) > 1 {
		msg += fmt.Sprintf(" (and %d more)", len(r)-1)
	}
	return msg + "; no key of this set is published or used until it is retired (errand keys retire KID)"
}

func refusals(err error) refusedKeys {
	var r refusedKeys
	errors.As(err, &r)
	return r
}

// openAll opens every stored key that is not retired. When none unseals,
// system_secret is wrong (an operator's mistake, not an attack): that is
// its own error. Otherwise any key that fails openKey makes a refusedKeys
// error.
func (i *Issuer) openAll(stored []broker.SigningKey) ([]*key, error) {
	var (
		keys    []*key
		refused refusedKeys
		sealed  = true // every refusal so far is a key that does not unseal
	)
	for _, sk := range stored {
		if sk.State == broker.KeyRetired {
			continue
		}
		k, r := i.openKey(sk)
		if r != nil {
			refused = append(refused, r)
			sealed = sealed && r.reason == reasonUnseal
			continue
		}
		keys = append(keys, k)
	}
	switch {
	case len(refused) == 0:
		return keys, nil
	case len(keys) == 0 && sealed:
		return nil, fmt.Errorf("jwt: key %s: cannot unseal signing key: wrong system_secret?", refused[0].kid)
	}
	return nil, refused
}

// Check reports why a stored key would be refused (see Reload), or nil.
// A retired key is never used and not checked.
func (i *Issuer) Check(sk broker.SigningKey) error {
	if sk.State == broker.KeyRetired {
		return nil
	}
	if _, r := i.openKey(sk); r != nil {
		return r
	}
	return nil
}

// RefusedKeys counts the distinct stored keys this process has refused.
func (i *Issuer) RefusedKeys() uint64 { return i.refused.Load() }

// raise raises the alarm for refused keys: the first sight of each row is
// logged at ERROR and counted, and each is recorded as a keys.refused
// audit event once that record commits.
func (i *Issuer) raise(ctx context.Context, refused refusedKeys) {
	events, rows := i.alarmEvents(refused, i.cfg.Now())
	if len(events) == 0 {
		return
	}
	_, err := i.cfg.Keys.ChangeKeys(ctx, func(_ []broker.SigningKey, now time.Time) (broker.KeyChange, error) {
		for j := range events {
			events[j].Time = now
		}
		return broker.KeyChange{Events: events}, nil
	})
	if err != nil {
		i.cfg.Logger.Error("signing keys: cannot record the refusal in the audit trail; will retry", "err", err)
		return
	}
	i.markAudited(rows)
}

// alarmEvents logs and counts the refusals not seen before, and returns
// the audit events of those not yet recorded, with their rows.
func (i *Issuer) alarmEvents(refused refusedKeys, now time.Time) ([]broker.AuditEvent, [][32]byte) {
	i.amu.Lock()
	defer i.amu.Unlock()
	if i.seen == nil {
		i.seen, i.audited = map[[32]byte]bool{}, map[[32]byte]bool{}
	}
	var (
		events []broker.AuditEvent
		rows   [][32]byte
	)
	for _, r := range refused {
		if !i.seen[r.row] {
			i.seen[r.row] = true
			i.refused.Add(1)
			i.cfg.Logger.Error("signing key refused: it is neither published nor used",
				"kid", r.kid, "state", r.state, "reason", r.reason)
		}
		if i.audited[r.row] {
			continue
		}
		d, _ := json.Marshal(map[string]string{"kid": r.kid, "state": r.state, "reason": r.reason}) // strings: cannot fail
		events = append(events, broker.AuditEvent{Time: now, Type: broker.EventKeysRefused, Actor: broker.SystemActor, Detail: d})
		rows = append(rows, r.row)
	}
	return events, rows
}

func (i *Issuer) markAudited(rows [][32]byte) {
	i.amu.Lock()
	defer i.amu.Unlock()
	for _, row := range rows {
		i.audited[row] = true
	}
}

// JWKS returns the public keys as a JSON Web Key Set.
func (i *Issuer) JWKS() []byte {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.jwks
}

// Algorithms lists the algorithms of the served keys.
func (i *Issuer) Algorithms() []string {
	i.mu.RLock()
	defer i.mu.RUnlock()
	seen := map[string]bool{}
	var out []string
	for _, k := range i.byKID {
		if !seen[k.alg] {
			seen[k.alg] = true
			out = append(out, k.alg)
		}
	}
	return out
}

type actClaim struct {
	Sub string `json:"sub"`
	Iss string `json:"iss"`
}

type claims struct {
	Iss      string   `json:"iss"`
	Sub      string   `json:"sub"`
	Act      actClaim `json:"act"`
	ClientID string   `json:"client_id"`
	Aud      string   `json:"aud"`
	Scope    string   `json:"scope"`
	TaskID   string   `json:"task_id"`
	JTI      string   `json:"jti"`
	IAT      int64    `json:"iat"`
	NBF      int64    `json:"nbf"`
	EXP      int64    `json:"exp"`
	// Cnf binds a DPoP-bound token to its key (RFC 9449 §6.1); absent
	// from bearer tokens.
	Cnf *cnfClaim `json:"cnf,omitempty"`
}

// cnfClaim is RFC 7800's confirmation claim with RFC 9449's jkt.
type cnfClaim struct {
	JKT string `json:"jkt"`
}

// Sign signs t with the current key.
func (i *Issuer) Sign(_ context.Context, t broker.AccessToken) (string, error) {
	i.mu.RLock()
	k := i.current
	i.mu.RUnlock()
	// A struct encodes faster than a map (no key sorting, no boxing);
	// its field order is fixed, so a claim set always signs the same.
	m := &claims{
		Iss: i.cfg.Issuer, Sub: t.Subject, Act: actClaim{Sub: t.Act.Subject, Iss: t.Act.Issuer},
		ClientID: t.ClientID, Aud: t.Audience, Scope: t.Scope, TaskID: t.TaskID, JTI: t.JTI,
		IAT: t.IssuedAt.Unix(), NBF: t.NotBefore.Unix(), EXP: t.ExpiresAt.Unix(),
	}
	if t.JKT != "" {
		m.Cnf = &cnfClaim{JKT: t.JKT}
	}
	// The compact form of a token (RFC 7515, 7.1) with the key's header
	// encoded once; golang-jwt's method signs it.
	body, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	signing := k.head + "." + base64.RawURLEncoding.EncodeToString(body)
	sig, err := method(k.alg).Sign(signing, k.signer)
	if err != nil {
		return "", err
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

func method(alg string) gojwt.SigningMethod {
	if alg == AlgES256 {
		return gojwt.SigningMethodES256
	}
	return gojwt.SigningMethodEdDSA
}

// Verify checks one of Errand's own tokens. Any defect is
// broker.ErrInvalidToken; the parsed token is never used when err != nil
// (CVE-2024-51744).
func (i *Issuer) Verify(ctx context.Context, raw string) (broker.AccessToken, error) {
	if len(raw) > MaxTokenBytes {
		return broker.AccessToken{}, broker.Errorf(broker.ErrInvalidToken, "token too large")
	}
	key := sha256.Sum256([]byte(raw))
	i.vmu.RLock()
	v, ok := i.verified[key]
	i.vmu.RUnlock()
	if ok && i.cfg.Now().Before(v.at.ExpiresAt.Add(Leeway)) {
		i.mu.RLock()
		held := i.byKID[v.kid] != nil
		i.mu.RUnlock()
		if held {
			return v.at, nil
		}
	}
	at, kid, err := i.verify(ctx, raw)
	if err != nil {
		return broker.AccessToken{}, err
	}
	i.vmu.Lock()
	if len(i.verified) >= maxVerified {
		clear(i.verified)
	}
	if i.verified == nil {
		i.verified = map[[32]byte]verifiedToken{}
	}
	i.verified[key] = verifiedToken{kid: kid, at: at}
	i.vmu.Unlock()
	return at, nil
}

func (i *Issuer) verify(ctx context.Context, raw string) (broker.AccessToken, string, error) {
	hdr, err := header(raw, TokenType)
	if err != nil {
		return broker.AccessToken{}, "", err
	}
	k := i.keyFor(ctx, hdr.KID)
	if k == nil || hdr.Alg != k.alg {
		return broker.AccessToken{}, "", broker.Errorf(broker.ErrInvalidToken, "unknown key or algorithm")
	}
	var c claims
	p := gojwt.NewParser(
		gojwt.WithValidMethods([]string{k.alg}),
		gojwt.WithIssuer(i.cfg.Issuer),
		gojwt.WithExpirationRequired(),
		gojwt.WithIssuedAt(),
		gojwt.WithTimeFunc(i.cfg.Now),
		// Replicas' clocks differ a little; the credential record, not the
		// token, decides expiry at introspection.
		gojwt.WithLeeway(Leeway),
		gojwt.WithStrictDecoding(),
	)
	if _, err := p.ParseWithClaims(raw, &claimsAdapter{c: &c}, func(*gojwt.Token) (any, error) {
		return k.public, nil
	}); err != nil {
		return broker.AccessToken{}, "", broker.Errorf(broker.ErrInvalidToken, "%v", err)
	}
	if c.JTI == "" || c.TaskID == "" || c.Sub == "" || c.Aud == "" {
		return broker.AccessToken{}, "", broker.Errorf(broker.ErrInvalidToken, "missing claims")
	}
	var jkt string
	if c.Cnf != nil {
		if c.Cnf.JKT == "" {
			return broker.AccessToken{}, "", broker.Errorf(broker.ErrInvalidToken, "cnf without jkt")
		}
		jkt = c.Cnf.JKT
	}
	return broker.AccessToken{
		Subject: c.Sub, Act: broker.Ref{Issuer: c.Act.Iss, Subject: c.Act.Sub},
		ClientID: c.ClientID, Audience: c.Aud, Scope: c.Scope, TaskID: c.TaskID, JTI: c.JTI,
		IssuedAt: time.Unix(c.IAT, 0).UTC(), NotBefore: time.Unix(c.NBF, 0).UTC(),
		ExpiresAt: time.Unix(c.EXP, 0).UTC(), JKT: jkt,
	}, hdr.KID, nil
}

type jwsHeader struct {
	Alg  string          `json:"alg"`
	KID  string          `json:"kid"`
	Typ  string          `json:"typ"`
	Crit json.RawMessage `json:"crit"`
}

// header decodes and checks the JOSE header, whose typ must be typ,
// before any key is touched.
func header(raw, typ string) (jwsHeader, error) {
	var h jwsHeader
	if strings.Count(raw, ".") != 2 {
		return h, broker.Errorf(broker.ErrInvalidToken, "not a compact JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(raw[:strings.IndexByte(raw, '.')])
	if err != nil {
		return h, broker.Errorf(broker.ErrInvalidToken, "malformed header")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&h); err != nil {
		return h, broker.Errorf(broker.ErrInvalidToken, "malformed header")
	}
	if h.Crit != nil {
		return h, broker.Errorf(broker.ErrInvalidToken, "crit header not supported")
	}
	if h.Typ != typ {
		return h, broker.Errorf(broker.ErrInvalidToken, "typ must be %s", typ)
	}
	return h, nil
}

// keyFor looks kid up in memory; an unknown kid may reload the keys from
// the store, at most once per ReloadInterval.
func (i *Issuer) keyFor(ctx context.Context, kid string) *key {
	i.mu.RLock()
	k := i.byKID[kid]
	last := i.lastReload
	i.mu.RUnlock()
	if k != nil || len(kid) > 128 || i.cfg.Now().Sub(last) < i.cfg.ReloadInterval {
		return k
	}
	if err := i.Reload(ctx); err != nil {
		return nil
	}
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.byKID[kid]
}

// claimsAdapter lets golang-jwt validate exp, iat, nbf and iss while the
// claims decode into a typed struct.
type claimsAdapter struct{ c *claims }

func (a *claimsAdapter) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(a.c)
}

func numeric(v int64) *gojwt.NumericDate {
	if v == 0 {
		return nil
	}
	return gojwt.NewNumericDate(time.Unix(v, 0))
}

func (a *claimsAdapter) GetExpirationTime() (*gojwt.NumericDate, error) { return numeric(a.c.EXP), nil }
func (a *claimsAdapter) GetIssuedAt() (*gojwt.NumericDate, error)       { return numeric(a.c.IAT), nil }
func (a *claimsAdapter) GetNotBefore() (*gojwt.NumericDate, error)      { return numeric(a.c.NBF), nil }
func (a *claimsAdapter) GetIssuer() (string, error)                     { return a.c.Iss, nil }
func (a *claimsAdapter) GetSubject() (string, error)                    { return a.c.Sub, nil }
func (a *claimsAdapter) GetAudience() (gojwt.ClaimStrings, error) {
	return gojwt.ClaimStrings{a.c.Aud}, nil
}

// IDJAGType is the typ header of an ID-JAG
// (draft-ietf-oauth-identity-assertion-authz-grant): Verify refuses it,
// as every identity verifier of Errand does.
const IDJAGType = "oauth-id-jag+jwt"

// idjagClaims are an ID-JAG's claims, in a fixed order.
type idjagClaims struct {
	Iss      string   `json:"iss"`
	Sub      string   `json:"sub"`
	Aud      string   `json:"aud"`
	ClientID string   `json:"client_id"`
	JTI      string   `json:"jti"`
	IAT      int64    `json:"iat"`
	EXP      int64    `json:"exp"`
	Resource string   `json:"resource"`
	Scope    string   `json:"scope,omitempty"`
	Act      actClaim `json:"act"`
	TaskID   string   `json:"task_id"`
}

// SignIDJAG signs g with the current key, under the typ of an ID-JAG: the
// key of an access token, published in the same JWKS, so that a target
// authorization server verifies it from Errand's jwks_uri.
func (i *Issuer) SignIDJAG(_ context.Context, g broker.IDJAG) (string, error) {
	return i.signAs(IDJAGType, idjagClaims{
		Iss: i.cfg.Issuer, Sub: g.Subject, Aud: g.Audience, ClientID: g.ClientID, JTI: g.JTI,
		IAT: g.IssuedAt.Unix(), EXP: g.ExpiresAt.Unix(), Resource: g.Resource, Scope: g.Scope,
		Act: actClaim{Sub: g.Act.Subject, Iss: g.Act.Issuer}, TaskID: g.TaskID,
	})
}

// signAs signs claims with the current key under header typ typ.
func (i *Issuer) signAs(typ string, claims any) (string, error) {
	i.mu.RLock()
	k := i.current
	i.mu.RUnlock()
	head, err := json.Marshal(joseHeader{Alg: k.alg, Kid: k.kid, Typ: typ})
	if err != nil {
		return "", err
	}
	body, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signing := base64.RawURLEncoding.EncodeToString(head) + "." + base64.RawURLEncoding.EncodeToString(body)
	sig, err := method(k.alg).Sign(signing, k.signer)
	if err != nil {
		return "", err
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// IDJAGOf verifies that raw is an ID-JAG this Errand signed, with a key it
// still holds, and returns its jti. Expiry is not checked: an ID-JAG's
// holder may revoke it after its exp, so that the target drops what it
// issued from it (see revocation.EventPush).
func (i *Issuer) IDJAGOf(ctx context.Context, raw string) (string, error) {
	if len(raw) > MaxTokenBytes {
		return "", broker.Errorf(broker.ErrInvalidToken, "token too large")
	}
	hdr, err := header(raw, IDJAGType)
	if err != nil {
		return "", err
	}
	k := i.keyFor(ctx, hdr.KID)
	if k == nil || hdr.Alg != k.alg {
		return "", broker.Errorf(broker.ErrInvalidToken, "unknown key or algorithm")
	}
	var c gojwt.MapClaims
	p := gojwt.NewParser(gojwt.WithValidMethods([]string{k.alg}), gojwt.WithoutClaimsValidation())
	if _, err := p.ParseWithClaims(raw, &c, func(*gojwt.Token) (any, error) {
		return k.public, nil
	}); err != nil {
		return "", broker.Errorf(broker.ErrInvalidToken, "%v", err)
	}
	iss, _ := c["iss"].(string)
	jti, _ := c["jti"].(string)
	if iss != i.cfg.Issuer || jti == "" {
		return "", broker.Errorf(broker.ErrInvalidToken, "not an ID-JAG of this issuer")
	}
	return jti, nil
}

// SETType is the typ header of a Security Event Token (RFC 8417 §2.3).
const SETType = "secevent+jwt"

// SignSET signs a Security Event Token (RFC 8417) for aud: jti, iat, the
// subject sub_id (RFC 9493) and events, with iss Errand.
func (i *Issuer) SignSET(_ context.Context, set broker.SecurityEvent) (string, error) {
	return i.signAs(SETType, setClaims{
		Iss: i.cfg.Issuer, Aud: set.Audience, JTI: set.JTI, IAT: set.IssuedAt.Unix(),
		TxN: set.Txn, SubID: set.SubID, Events: set.Events,
	})
}

// setClaims are a SET's claims, in a fixed order.
type setClaims struct {
	Iss    string         `json:"iss"`
	Aud    string         `json:"aud"`
	JTI    string         `json:"jti"`
	IAT    int64          `json:"iat"`
	TxN    string         `json:"txn,omitempty"`
	SubID  map[string]any `json:"sub_id"`
	Events map[string]any `json:"events"`
}
