package dpop_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"sync"
	"time"

	"github.com/errandhq/errand/dpop"
)

// seen is a replay cache in memory, enough for one process; a server of
// several replicas remembers proofs in a store they share.
type seen struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (s *seen) Remember(_ context.Context, id string, _ time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ids[id] {
		return false, nil
	}
	s.ids[id] = true
	return true, nil
}

// A resource server checks the proof that accompanies a DPoP-bound token:
// signed by the key of the token's cnf.jkt (from the token or from
// introspection), for this request, with ath the token's hash.
func ExampleVerifier_VerifyBound() {
	v, err := dpop.New(dpop.Config{Replay: &seen{ids: map[string]bool{}}})
	if err != nil {
		panic(err)
	}
	client, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jkt, _ := dpop.KeyThumbprint(client) // what Errand wrote in cnf.jkt
	const token = "eyJ…the access token"
	req := dpop.Request{Method: "GET", URL: "https://api.example.com/repos/acme/app", AccessToken: token}

	proof, _ := dpop.NewProof(client, req.Method, req.URL, token, time.Now())
	_, err = v.VerifyBound(context.Background(), proof, req, jkt)
	fmt.Println("holder's proof:", err)

	_, err = v.VerifyBound(context.Background(), proof, req, jkt)
	fmt.Println("same proof again refused:", err != nil)

	thief, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	stolen, _ := dpop.NewProof(thief, req.Method, req.URL, token, time.Now())
	_, err = v.VerifyBound(context.Background(), stolen, req, jkt)
	fmt.Println("another key refused:", err != nil)
	// Output:
	// holder's proof: <nil>
	// same proof again refused: true
	// another key refused: true
}
