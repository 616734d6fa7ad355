package jwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/internal/seal"
)

// Supported signing algorithms. RS256 is deliberately absent: it costs
// twenty times more CPU per signature than EdDSA.
const (
	AlgEdDSA = "EdDSA"
	AlgES256 = "ES256"
)

type key struct {
	kid    string
	alg    string
	signer crypto.Signer
	public crypto.PublicKey
	jwk    []byte
	state  string
	// head is the encoded JOSE header of the tokens it signs, the same
	// for all of them.
	head string
}

// joseHeader is the header of Errand's access tokens.
type joseHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

func encodeHeader(alg, kid string) string {
	b, _ := json.Marshal(joseHeader{Alg: alg, Kid: kid, Typ: TokenType}) // strings only: cannot fail
	return base64.RawURLEncoding.EncodeToString(b)
}

func generate(alg string) (crypto.Signer, error) {
	switch alg {
	case AlgEdDSA:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	case AlgES256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return nil, fmt.Errorf("jwt: unsupported signing algorithm %q (use EdDSA or ES256)", alg)
}

// kidOf derives a key id from the public key (RFC 7638 thumbprint), so a
// kid names exactly one key.
func kidOf(pub crypto.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

func publicJWK(pub crypto.PublicKey, kid, alg string) ([]byte, error) {
	return (&jose.JSONWebKey{Key: pub, KeyID: kid, Algorithm: alg, Use: "sig"}).MarshalJSON()
}

// sealer encrypts private keys with a key derived from the system secret;
// the kid is the additional data, so a sealed key cannot be moved to
// another row.
type sealer struct{ s *seal.Sealer }

func newSealer(secret []byte) (*sealer, error) {
	s, err := seal.New(secret, "errand signing-key seal v1")
	if err != nil {
		return nil, err
	}
	return &sealer{s: s}, nil
}

func (s *sealer) seal(priv crypto.Signer, kid string) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return s.s.Seal(der, []byte(kid))
}

func (s *sealer) open(sealed []byte, kid string) (crypto.Signer, error) {
	der, err := s.s.Open(sealed, []byte(kid))
	if err != nil {
		return nil, errors.New("cannot unseal signing key: wrong system_secret?")
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unexpected key type %T", k)
	}
	return signer, nil
}

// A stored key is used only once it proves to be the key it claims to be.
// The row's columns are not trusted: whoever can write the database (the
// self-migrating serving role, or anyone who can write the SQLite file)
// could otherwise put their own public key beside Errand's sealed private
// key, and the JWKS would hand resource servers a key that Errand does not
// hold. Only the sealed private key is authentic (sealing needs
// system_secret, and binds the kid); everything published is derived from
// it.
//
// Reasons a stored key is refused, fixed strings (the row is not trusted,
// so none of its text is quoted).
const (
	reasonUnseal    = "its private key does not unseal under system_secret with its kid"
	reasonAlg       = "its alg does not fit its private key"
	reasonKID       = "its kid is not the RFC 7638 thumbprint of its private key"
	reasonPublicJWK = "its stored public JWK is not its private key's public half"
)

// keyRefusal is why one stored key is neither published nor used.
type keyRefusal struct {
	kid    string // safeKID of the row's kid
	state  string
	reason string
	// row names the stored row (kid, alg and both halves), so that one
	// refused row raises one alarm however often it is read.
	row [32]byte
}

func (r *keyRefusal) Error() string {
	return fmt.Sprintf("signing key %s (%s) refused: %s", r.kid, r.state, r.reason)
}

var kidChars = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// safeKID is a stored kid fit for a log line, an error or an audit record:
// itself when it looks like a thumbprint, otherwise its SHA-256.
func safeKID(kid string) string {
	if kidChars.MatchString(kid) {
		return kid
	}
	sum := sha256.Sum256([]byte(kid))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func refuse(sk broker.SigningKey, reason string) *keyRefusal {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(sk.KID), []byte(sk.Alg), sk.Private, sk.PublicJWK} {
		h.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(part))))
		h.Write(part)
	}
	r := &keyRefusal{kid: safeKID(sk.KID), state: sk.State, reason: reason}
	switch sk.State {
	case broker.KeyNext, broker.KeyCurrent, broker.KeyPrevious, broker.KeyRetired:
	default:
		r.state = "unknown state"
	}
	h.Sum(r.row[:0])
	return r
}

// openKey unseals a stored key and checks that the row is that key: its
// alg fits the private key, its kid is the private key's RFC 7638
// thumbprint (as every kid Errand made), and its stored public JWK is the
// private key's public half. The key it returns carries a JWK derived
// from the private key, never the stored one.
func (i *Issuer) openKey(sk broker.SigningKey) (*key, *keyRefusal) {
	signer, err := i.sealer.open(sk.Private, sk.KID)
	if err != nil {
		return nil, refuse(sk, reasonUnseal)
	}
	if !fits(sk.Alg, signer) {
		return nil, refuse(sk, reasonAlg)
	}
	pub := signer.Public()
	if kid, err := kidOf(pub); err != nil || kid != sk.KID {
		return nil, refuse(sk, reasonKID)
	}
	if !samePublic(sk.PublicJWK, pub, sk.KID, sk.Alg) {
		return nil, refuse(sk, reasonPublicJWK)
	}
	jwk, err := publicJWK(pub, sk.KID, sk.Alg)
	if err != nil {
		return nil, refuse(sk, reasonPublicJWK)
	}
	return &key{kid: sk.KID, alg: sk.Alg, signer: signer, public: pub, jwk: jwk, state: sk.State,
		head: encodeHeader(sk.Alg, sk.KID)}, nil
}

// fits reports whether alg is the algorithm of the private key s.
func fits(alg string, s crypto.Signer) bool {
	switch alg {
	case AlgEdDSA:
		_, ok := s.(ed25519.PrivateKey)
		return ok
	case AlgES256:
		k, ok := s.(*ecdsa.PrivateKey)
		return ok && k.Curve == elliptic.P256()
	}
	return false
}

// samePublic reports whether stored is a public JWK of exactly pub, with
// the row's kid and alg.
func samePublic(stored []byte, pub crypto.PublicKey, kid, alg string) bool {
	var j jose.JSONWebKey
	if err := j.UnmarshalJSON(stored); err != nil || !j.IsPublic() || j.KeyID != kid || j.Algorithm != alg {
		return false
	}
	eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(j.Key)
}
