package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"sync"
)

// reqInfo is what the request log line says of a request beyond its route
// and status: filled in as the request is handled. It never holds a token,
// a body or a header value other than a request id.
type reqInfo struct {
	mu        sync.Mutex
	id        string
	principal string
	task      string
	code      string
}

type reqInfoKey struct{}

func infoOf(ctx context.Context) *reqInfo {
	ri, _ := ctx.Value(reqInfoKey{}).(*reqInfo)
	return ri
}

func (ri *reqInfo) set(f func(*reqInfo)) {
	if ri == nil {
		return
	}
	ri.mu.Lock()
	f(ri)
	ri.mu.Unlock()
}

// requestID is the caller's X-Request-Id when it is a short, plain token
// (a proxy's or a client's, for tracing), otherwise a new random one: what
// reaches the log is never free text.
func requestID(r *http.Request) string {
	if v := r.Header.Get("X-Request-Id"); len(v) > 0 && len(v) <= 64 {
		ok := true
		for i := 0; i < len(v) && ok; i++ {
			c := v[i]
			ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		}
		if ok {
			return v
		}
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
