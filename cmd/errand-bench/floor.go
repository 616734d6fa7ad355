package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/errandhq/errand/httpapi"
)

// The floor scenario measures what the introspection request costs a Go
// HTTP server that does nothing else: the same client, connections,
// request and response sizes as the introspect scenario, served by a
// process of its own (this binary, re-run with floorEnv set) with
// Errand's http.Server settings and a chi router. It parses the form and
// encodes an introspection-shaped answer from a struct, as Errand does,
// and no more: no caller authentication, token verification, status
// lookup, rate limit, request timeout or request log. Its CPU per request
// and its latency percentiles are what any Go service pays on this
// machine at this concurrency; Errand's figures read against them.

// floorEnv, when set, makes this binary the floor server, serving on the
// listener passed as file descriptor 3.
const floorEnv = "ERRAND_BENCH_FLOOR_SERVER"

// floorHandler answers POST /v1/introspect with a form token= as Errand
// answers for an active token (its IntrospectionResponse), and 400
// without a token.
func floorHandler() http.Handler {
	r := chi.NewRouter()
	act := httpapi.ActClaim{Iss: "https://idp.example.com/agent", Sub: "agent-0"}
	r.Post("/v1/introspect", func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, httpapi.MaxBodyBytes)
		if err := r.ParseForm(); err != nil || r.PostForm.Get("token") == "" {
			http.Error(w, "token is required", http.StatusBadRequest)
			return
		}
		now := time.Now().Unix()
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_ = json.NewEncoder(w).Encode(httpapi.IntrospectionResponse{
			Active: true, Act: act, Aud: audience, ClientID: "agent-0", Exp: now + 300, Iat: now, Nbf: now,
			Iss: "http://127.0.0.1:8080", JTI: "0f1e2d3c4b5a69788796a5b4c3d2e1f0", Scope: "repo.read:acme/api",
			Sub: "alice", TaskID: "tsk_0123456789abcdef0123456789", TokenType: "Bearer",
		})
	})
	return r
}

// serveFloor is the floor server's main.
func serveFloor() error {
	ln, err := net.FileListener(os.NewFile(3, "listener"))
	if err != nil {
		return err
	}
	return httpapi.NewHTTPServer("", floorHandler()).Serve(ln)
}

// floorServer is a running floor server.
type floorServer struct {
	cmd  *exec.Cmd
	base string
}

// startFloor runs this binary as the floor server on a listener it opens
// itself, so that the address is known and never raced for.
func startFloor() (*floorServer, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), floorEnv+"=1")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &floorServer{cmd: cmd, base: "http://" + ln.Addr().String()}, nil
}

func (f *floorServer) stop() {
	_ = f.cmd.Process.Kill()
	_ = f.cmd.Wait()
}

// floor returns the floor server, started on first use.
func (b *bench) floor() (*floorServer, error) {
	if b.floorSrv == nil {
		f, err := startFloor()
		if err != nil {
			return nil, fmt.Errorf("floor server: %w", err)
		}
		b.floorSrv = f
	}
	return b.floorSrv, nil
}

// floorOp introspects an active token's text at the floor server.
func (b *bench) floorOp(int) error {
	var out struct{ Active bool }
	if err := b.callAt(b.floorSrv.base, "POST", "/v1/introspect", b.rs, url.Values{"token": {b.nextToken()}}, 200, &out); err != nil {
		return err
	}
	if !out.Active {
		return errors.New("the floor server answered inactive")
	}
	return nil
}
