package dpop

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// TokenType is the typ header of a DPoP proof (RFC 9449 §4.2).
const TokenType = "dpop+jwt"

// MaxProofBytes caps the size of a proof; larger ones are refused unread.
const MaxProofBytes = 8 << 10

// DefaultWindow is how far a proof's iat may lie from the verifier's clock,
// in either direction, by default.
const DefaultWindow = 60 * time.Second

// DefaultAlgorithms are the signature algorithms accepted by default:
// asymmetric only (RFC 9449 §4.2: "MUST NOT be none or an identifier for
// a symmetric algorithm").
var DefaultAlgorithms = []string{"ES256", "EdDSA", "Ed25519", "RS256", "PS256"}

// supported are the algorithms a Config may allow, each with the key it
// needs.
var supported = map[string]jose.SignatureAlgorithm{
	"ES256": jose.ES256, "ES384": jose.ES384, "EdDSA": jose.EdDSA, "Ed25519": algEd25519,
	"RS256": jose.RS256, "PS256": jose.PS256,
}

// algEd25519 is RFC 9864's fully-specified name of EdDSA over Ed25519,
// which current clients (oauth4webapi, openid-client) write in their
// proofs. go-jose knows only "EdDSA": a proof named Ed25519 is parsed by
// go-jose and its signature checked here, with an Ed25519 key only.
const algEd25519 = jose.SignatureAlgorithm("Ed25519")

// ErrInvalidProof is every defect of a proof: it maps to the OAuth error
// invalid_dpop_proof (RFC 9449 §5, §7.1). The wrapped detail says which.
var ErrInvalidProof = errors.New("invalid DPoP proof")

// ReplayCache remembers the proofs seen, for every replica of a server.
type ReplayCache interface {
	// Remember records id until expiresAt and reports whether it was not
	// recorded already (fresh). An error is an outage, never a verdict.
	Remember(ctx context.Context, id string, expiresAt time.Time) (fresh bool, err error)
}

// Config configures a Verifier.
type Config struct {
	// Algorithms is the allow-list of alg values; default
	// DefaultAlgorithms. Only asymmetric algorithms are accepted.
	Algorithms []string
	// Window bounds |now - iat|; default DefaultWindow.
	Window time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Replay remembers each proof's jti; required.
	Replay ReplayCache
	// Nonces, when set, makes a server nonce required in every proof
	// (RFC 9449 §8): a proof without a current one is ErrUseNonce.
	Nonces *Nonces
}

// Verifier checks DPoP proofs.
type Verifier struct {
	algs   []jose.SignatureAlgorithm
	names  []string
	window time.Duration
	now    func() time.Time
	replay ReplayCache
	nonces *Nonces
}

// New returns a Verifier for cfg.
func New(cfg Config) (*Verifier, error) {
	if cfg.Replay == nil {
		return nil, errors.New("dpop: a ReplayCache is required")
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = DefaultAlgorithms
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &Verifier{window: cfg.Window, now: cfg.Now, replay: cfg.Replay, nonces: cfg.Nonces}
	for _, a := range cfg.Algorithms {
		alg, ok := supported[a]
		if !ok {
			return nil, fmt.Errorf("dpop: algorithm %q is not an accepted asymmetric algorithm", a)
		}
		v.algs, v.names = append(v.algs, alg), append(v.names, a)
	}
	return v, nil
}

// Algorithms lists the accepted alg values, for the authorization server
// metadata's dpop_signing_alg_values_supported (RFC 9449 §5.1).
func (v *Verifier) Algorithms() []string { return append([]string(nil), v.names...) }

// Request is the HTTP request a proof must name.
type Request struct {
	// Method is the request's method (htm).
	Method string
	// URL is the request's URL as the server is known publicly (its
	// configured public URL and the request's path), never built from the
	// Host header; its query and fragment are ignored (htu).
	URL string
	// AccessToken, when set, is the access token the proof accompanies:
	// the proof's ath must be its hash (§4.3 step 11).
	AccessToken string
}

// Proof is a verified proof.
type Proof struct {
	// JKT is the RFC 7638 SHA-256 thumbprint of the proof's key,
	// base64url without padding: a bound token's cnf.jkt (§6.1).
	JKT      string
	JTI      string
	IssuedAt time.Time
}

// claims are a proof's payload. Other claims are allowed and ignored.
type claims struct {
	JTI   string          `json:"jti"`
	HTM   string          `json:"htm"`
	HTU   string          `json:"htu"`
	IAT   json.RawMessage `json:"iat"`
	ATH   string          `json:"ath"`
	Nonce string          `json:"nonce"`
}

// Verify checks proof for req (RFC 9449 §4.3) and remembers its jti: the
// same proof is refused the second time, by this replica or any other
// sharing the ReplayCache. Any defect of the proof is ErrInvalidProof; an
// error of the cache is returned as it is.
func (v *Verifier) Verify(ctx context.Context, proof string, req Request) (Proof, error) {
	p, err := v.Check(proof, req)
	if err != nil {
		return Proof{}, err
	}
	return v.remember(ctx, p)
}

// remember records p's jti, refusing a jti seen before.
func (v *Verifier) remember(ctx context.Context, p Proof) (Proof, error) {
	fresh, err := v.replay.Remember(ctx, replayID(p), p.IssuedAt.Add(v.window))
	if err != nil {
		return Proof{}, err
	}
	if !fresh {
		return Proof{}, invalid("the proof's jti was used before")
	}
	return p, nil
}

// VerifyBound is Verify for a resource server (§7.1): the proof must
// accompany req.AccessToken (ath), and its key must be the token's, jkt
// (the token's cnf.jkt, or the jkt its introspection answered).
func (v *Verifier) VerifyBound(ctx context.Context, proof string, req Request, jkt string) (Proof, error) {
	if req.AccessToken == "" || jkt == "" {
		return Proof{}, invalid("a bound token and its jkt are required")
	}
	p, err := v.Check(proof, req)
	if err != nil {
		return Proof{}, err
	}
	if subtle.ConstantTimeCompare([]byte(p.JKT), []byte(jkt)) != 1 {
		return Proof{}, invalid("the proof's key is not the key the token is bound to")
	}
	return v.remember(ctx, p)
}

// Nonce is a fresh server nonce for the DPoP-Nonce header, "" when the
// verifier asks for none.
func (v *Verifier) Nonce() string {
	if v.nonces == nil {
		return ""
	}
	return v.nonces.Issue()
}

// Check is Verify without the replay cache: every check of the proof
// itself, which alone never makes it acceptable twice.
func (v *Verifier) Check(proof string, req Request) (Proof, error) {
	if len(proof) > MaxProofBytes {
		return Proof{}, invalid("the proof is larger than %d bytes", MaxProofBytes)
	}
	if privateJWK(proof) {
		return Proof{}, invalid("the jwk header holds a private key")
	}
	jws, err := jose.ParseSignedCompact(proof, v.algs)
	if err != nil {
		// The library's text would quote the header's own bytes.
		return Proof{}, invalid("not a JWS signed with an accepted algorithm")
	}
	if len(jws.Signatures) != 1 {
		return Proof{}, invalid("exactly one signature is required")
	}
	h := jws.Signatures[0].Protected
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != TokenType {
		return Proof{}, invalid("typ must be %s", TokenType)
	}
	jwk := h.JSONWebKey
	if jwk == nil {
		return Proof{}, invalid("the jwk header is required")
	}
	if !jwk.Valid() || !jwk.IsPublic() {
		return Proof{}, invalid("the jwk header must be a public key")
	}
	if err := keyFits(jose.SignatureAlgorithm(h.Algorithm), jwk.Key); err != nil {
		return Proof{}, err
	}
	payload, err := verifySignature(jws, proof, h.Algorithm, jwk)
	if err != nil {
		return Proof{}, invalid("the signature does not verify with the jwk header's key")
	}
	var c claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return Proof{}, invalid("the claims are not a JSON object")
	}
	if c.JTI == "" || len(c.JTI) > 256 {
		return Proof{}, invalid("jti is required, of at most 256 bytes")
	}
	if c.HTM != req.Method {
		return Proof{}, invalid("htm is not this request's method")
	}
	want, err := normalize(req.URL)
	if err != nil {
		return Proof{}, fmt.Errorf("dpop: the request's URL: %w", err)
	}
	if got, err := normalize(c.HTU); err != nil || got != want {
		return Proof{}, invalid("htu is not this request's URL")
	}
	iat, err := numericDate(c.IAT)
	if err != nil {
		return Proof{}, err
	}
	if now := v.now(); iat.Before(now.Add(-v.window)) || iat.After(now.Add(v.window)) {
		return Proof{}, invalid("iat is not within %s of the server's clock", v.window)
	}
	if req.AccessToken != "" {
		sum := sha256.Sum256([]byte(req.AccessToken))
		ath := base64.RawURLEncoding.EncodeToString(sum[:])
		if subtle.ConstantTimeCompare([]byte(c.ATH), []byte(ath)) != 1 {
			return Proof{}, invalid("ath is not the hash of the access token")
		}
	}
	jkt, err := Thumbprint(jwk)
	if err != nil {
		return Proof{}, invalid("the key has no thumbprint")
	}
	// Last, so that only an otherwise valid proof is asked to come again
	// with a nonce (§8), and before its jti is remembered.
	if v.nonces != nil && !v.nonces.valid(c.Nonce) {
		return Proof{}, ErrUseNonce
	}
	return Proof{JKT: jkt, JTI: c.JTI, IssuedAt: iat}, nil
}

// privateJWK reports whether the proof's jwk header carries private key
// material (RFC 7518 §6.2.2, §6.3.2, §6.4.1; RFC 8037 §2): such a proof
// is refused whatever else is wrong with it, and says so.
func privateJWK(compact string) bool {
	head, _, _ := strings.Cut(compact, ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return false
	}
	var h struct {
		JWK map[string]json.RawMessage `json:"jwk"`
	}
	if json.Unmarshal(raw, &h) != nil {
		return false
	}
	for _, k := range []string{"d", "p", "q", "dp", "dq", "qi"} {
		if _, ok := h.JWK[k]; ok {
			return true
		}
	}
	return false
}

// verifySignature checks the proof's one signature with jwk: go-jose's
// for the algorithms it knows, ed25519.Verify over the compact signing
// input for RFC 9864's "Ed25519".
func verifySignature(jws *jose.JSONWebSignature, compact, alg string, jwk *jose.JSONWebKey) ([]byte, error) {
	if jose.SignatureAlgorithm(alg) != algEd25519 {
		return jws.Verify(jwk)
	}
	pub, ok := jwk.Key.(ed25519.PublicKey)
	parts := strings.Split(compact, ".")
	if !ok || len(parts) != 3 {
		return nil, errors.New("not an Ed25519 key")
	}
	// go-jose refuses a crit header it does not understand (RFC 7515
	// §4.1.11) in Verify, which this path does not call: no extension is
	// understood here, so any crit is refused.
	var hdr map[string]json.RawMessage
	raw, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil || json.Unmarshal(raw, &hdr) != nil {
		return nil, errors.New("malformed header")
	}
	if _, ok := hdr["crit"]; ok {
		return nil, errors.New("unsupported crit header")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
		return nil, errors.New("bad signature")
	}
	return jws.UnsafePayloadWithoutVerification(), nil
}

// Thumbprint is the RFC 7638 SHA-256 thumbprint of k, base64url without
// padding, as RFC 9449 §6.1 writes jkt.
func Thumbprint(k *jose.JSONWebKey) (string, error) {
	b, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// keyFits refuses a key that is not of alg's kind and size: ES256 is P-256
// only (RFC 7518 §3.4), RSA keys have at least 2048 bits.
func keyFits(alg jose.SignatureAlgorithm, key any) error {
	switch alg {
	case jose.ES256, jose.ES384:
		k, ok := key.(*ecdsa.PublicKey)
		want := elliptic.P256()
		if alg == jose.ES384 {
			want = elliptic.P384()
		}
		if !ok || k.Curve != want {
			return invalid("alg %s needs an EC key on %s", alg, want.Params().Name)
		}
	case jose.EdDSA, algEd25519:
		if _, ok := key.(ed25519.PublicKey); !ok {
			return invalid("alg %s needs an Ed25519 key", alg)
		}
	case jose.RS256, jose.PS256:
		k, ok := key.(*rsa.PublicKey)
		if !ok || k.N.BitLen() < 2048 {
			return invalid("alg %s needs an RSA key of at least 2048 bits", alg)
		}
	}
	return nil
}

// numericDate reads iat: a JSON number of seconds (RFC 7519 §2).
func numericDate(raw json.RawMessage) (time.Time, error) {
	if len(raw) == 0 {
		return time.Time{}, invalid("iat is required")
	}
	var f float64
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&f); err != nil || math.IsNaN(f) || f < 0 || f > 1e11 {
		return time.Time{}, invalid("iat must be a number of seconds")
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}

// replayID is what the cache keeps of a proof: its jti within its key,
// hashed to a fixed length (two clients' jtis never collide, and a long
// jti costs the cache nothing).
func replayID(p Proof) string {
	sum := sha256.Sum256([]byte(p.JKT + "\x00" + p.JTI))
	return hex.EncodeToString(sum[:])
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidProof, fmt.Sprintf(format, args...))
}
