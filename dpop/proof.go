package dpop

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// NewProof signs a proof for a request, as a client sends it in the DPoP
// header (RFC 9449 §4.2): key is the client's P-256, Ed25519 or RSA key
// (ES256, EdDSA, PS256), accessToken the token it accompanies ("" when
// asking for one), now its iat. Its jti is random.
func NewProof(key crypto.Signer, method, url, accessToken string, now time.Time) (string, error) {
	return NewProofWithNonce(key, method, url, accessToken, "", now)
}

// NewProofWithNonce is NewProof carrying the server's nonce (the last
// DPoP-Nonce header it answered, RFC 9449 §8); "" carries none.
func NewProofWithNonce(key crypto.Signer, method, url, accessToken, nonce string, now time.Time) (string, error) {
	var alg jose.SignatureAlgorithm
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return "", errors.New("dpop: only P-256 EC keys are supported")
		}
		alg = jose.ES256
	case ed25519.PrivateKey:
		alg = jose.EdDSA
	case *rsa.PrivateKey:
		alg = jose.PS256
	default:
		return "", errors.New("dpop: unsupported key type")
	}
	opts := (&jose.SignerOptions{EmbedJWK: true}).WithType(TokenType)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		return "", err
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", err
	}
	c := map[string]any{
		"jti": base64.RawURLEncoding.EncodeToString(id[:]),
		"htm": method, "htu": url, "iat": now.Unix(),
	}
	if nonce != "" {
		c["nonce"] = nonce
	}
	if accessToken != "" {
		sum := sha256.Sum256([]byte(accessToken))
		c["ath"] = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	jws, err := s.Sign(b)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// KeyThumbprint is the jkt of key's public key: what a token bound to
// proofs signed with key carries in cnf.jkt.
func KeyThumbprint(key crypto.Signer) (string, error) {
	return Thumbprint(&jose.JSONWebKey{Key: key.Public()})
}
