package jwt

import (
	"context"
	"testing"
	"time"
)

// FuzzVerify: no input panics the verifier, and no mutation of a valid
// token verifies (golang-jwt's parsed token is never used on error).
func FuzzVerify(f *testing.F) {
	now := time.Now().Truncate(time.Second)
	i, err := New(context.Background(), Config{Issuer: iss, Keys: &memKeys{}, Secret: secret, Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	valid, err := i.Sign(context.Background(), sample(now))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:len(valid)-2])
	f.Add("eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.e30.")
	f.Fuzz(func(t *testing.T, raw string) {
		at, err := i.Verify(context.Background(), raw)
		if err == nil && raw != valid {
			// Base64 has more than one spelling of the last character of a
			// segment only when padding bits differ; golang-jwt decodes
			// strictly, so any other accepted token is a forgery.
			t.Fatalf("a mutated token verified: %q -> %+v", raw, at)
		}
	})
}
