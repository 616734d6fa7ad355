package jwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"

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
