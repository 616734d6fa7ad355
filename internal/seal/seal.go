// Package seal encrypts small secrets kept in the database (signing keys,
// per-task Vault tokens) with AES-256-GCM under a key derived from
// system_secret by HKDF-SHA256. Each purpose derives its own key, and the
// caller's additional data (a kid, a task id) binds a sealed value to its
// row, so it cannot be moved to another.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
)

// Sealer seals and opens values for one purpose.
type Sealer struct{ aead cipher.AEAD }

// New derives the key for purpose from secret (at least 32 bytes).
func New(secret []byte, purpose string) (*Sealer, error) {
	if len(secret) < 32 {
		return nil, errors.New("seal: system_secret must be at least 32 bytes")
	}
	k, err := hkdf.Key(sha256.New, secret, nil, purpose, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plain bound to ad.
func (s *Sealer) Seal(plain, ad []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return s.aead.Seal(nonce, nonce, plain, ad), nil
}

// Open decrypts a sealed value bound to ad.
func (s *Sealer) Open(sealed, ad []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("seal: value too short")
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], ad)
	if err != nil {
		return nil, errors.New("seal: cannot open: wrong system_secret or a value moved between rows")
	}
	return plain, nil
}
