package client

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// SPIFFETokenSource returns a function that yields the workload's JWT-SVID
// for audience (Errand's issuer audience, e.g. "errand") from the SPIFFE
// Workload API, and a function that closes the connection. addr is the
// Workload API address ("unix:///run/spire/agent.sock"); "" reads
// SPIFFE_ENDPOINT_SOCKET. An SVID is reused until half of its life is
// left (SPIRE's default JWT-SVID lives 5 minutes), then fetched again.
//
//	token, closeFn, err := client.SPIFFETokenSource(ctx, "", "errand")
//	defer closeFn()
//	c := client.New(server, "")
//	c.Token, err = token(ctx) // before each call, or as the client's token source
func SPIFFETokenSource(ctx context.Context, addr, audience string) (func(context.Context) (string, error), func() error, error) {
	if audience == "" {
		return nil, nil, errors.New("spiffe: audience is required")
	}
	var opts []workloadapi.ClientOption
	if addr != "" {
		opts = append(opts, workloadapi.WithAddr(addr))
	}
	wl, err := workloadapi.New(ctx, opts...)
	if err != nil {
		return nil, nil, err
	}
	var (
		mu      sync.Mutex
		current *jwtsvid.SVID
		renewAt time.Time
	)
	token := func(ctx context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if current != nil && time.Now().Before(renewAt) {
			return current.Marshal(), nil
		}
		svid, err := wl.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience})
		if err != nil {
			return "", err
		}
		current = svid
		renewAt = time.Now().Add(time.Until(svid.Expiry) / 2)
		return svid.Marshal(), nil
	}
	return token, wl.Close, nil
}
