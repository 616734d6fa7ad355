// Package testspire runs a real SPIRE server and agent on loopback for the
// SPIFFE tests: the server keeps its data in a PostgreSQL database (the
// binaries are built without cgo, so without SQLite), the agent attests
// with a join token, and workloads are attested by the unix attestor (by
// uid), so that the test process itself is a registered workload.
//
// The binaries (spire-server, spire-agent v1.13.3) are built once per
// machine by scripts/build-spire.sh into a cache outside the repository
// (or found in ERRAND_SPIRE_BIN, a directory). Without them the tests
// skip — except under CI=true, where they fail.
package testspire

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/errandhq/errand/internal/testing/testskip"
)

// Version is the SPIRE version the tests run.
const Version = "v1.13.3"

// BinDir is the directory holding spire-server and spire-agent.
func BinDir() string {
	if b := os.Getenv("ERRAND_SPIRE_BIN"); b != "" {
		return b
	}
	cache := os.Getenv("ERRAND_SPIRE_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "errand-spire")
	}
	return filepath.Join(cache, "bin", Version)
}

// Require fails (under CI=true) or skips t when the binaries are missing.
func Require(t testing.TB) string {
	t.Helper()
	dir := BinDir()
	for _, b := range []string{"spire-server", "spire-agent"} {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Mode()&0o111 == 0 {
			msg := fmt.Sprintf("no %s at %s: build it once with scripts/build-spire.sh (or set ERRAND_SPIRE_BIN)", b, dir)
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			testskip.Skip(t, "SPIRE", msg)
		}
	}
	return dir
}

// Server is a running spire-server.
type Server struct {
	TrustDomain string
	Socket      string // the server API socket
	// BundleEndpoint is the server's federation bundle endpoint
	// (https_spiffe profile; its SPIFFE ID is spiffe://<td>/spire/server).
	BundleEndpoint string
	Port           int
	bin, dir       string
}

// Agent is a running spire-agent.
type Agent struct {
	Socket string // the Workload API socket
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartServer starts a server of trust domain td keeping its data in the
// PostgreSQL database at dbURL; it stops at cleanup.
func StartServer(t testing.TB, td, dbURL string) *Server {
	t.Helper()
	bins := Require(t)
	// Unix socket paths are short (108 bytes): not under t.TempDir.
	dir, err := os.MkdirTemp("", "spire")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{TrustDomain: td, Socket: filepath.Join(dir, "server.sock"), Port: freePort(t),
		bin: filepath.Join(bins, "spire-server"), dir: dir}
	bport := freePort(t)
	s.BundleEndpoint = fmt.Sprintf("https://127.0.0.1:%d", bport)
	conf := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "WARN"
  default_jwt_svid_ttl = "5m"
  federation {
    bundle_endpoint {
      address = "127.0.0.1"
      port = %d
      profile "https_spiffe" {}
    }
  }
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "postgres"
      connection_string = %q
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
}
`, s.Port, s.Socket, td, filepath.Join(dir, "data"), bport, dbURL)
	cfg := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, dir, "server", s.bin, "run", "-config", cfg)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := s.Run(context.Background(), "healthcheck", "-socketPath", s.Socket); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("spire-server not healthy: %v\n%s", err, logOf(dir, "server"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return s
}

// start runs a SPIRE process, logging to dir/<name>.log, and stops it at
// cleanup.
func start(t testing.TB, dir, name, bin string, args ...string) {
	t.Helper()
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr, cmd.Dir = log, log, dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		log.Close()
		if t.Failed() {
			t.Logf("spire %s log:\n%s", name, logOf(dir, name))
		}
	})
}

func logOf(dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, name+".log"))
	return string(b)
}

// Run runs a spire-server command against the server's API socket.
func (s *Server) Run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if len(args) > 0 && args[0] != "healthcheck" && !contains(args, "-socketPath") {
		args = append(args, "-socketPath", s.Socket)
	}
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, s.bin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("spire-server %s: %v: %s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out), nil
}

// MustRun is Run, failing t on error.
func (s *Server) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := s.Run(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func contains(ss []string, s string) bool {
	for _, v := range ss {
		if v == s {
			return true
		}
	}
	return false
}

// StartAgent generates a join token for node ID spiffe://<td>/node and
// starts an agent attested with it, with the unix workload attestor.
func (s *Server) StartAgent(t testing.TB) *Agent {
	t.Helper()
	out := s.MustRun(t, "token", "generate", "-spiffeID", s.ID("/node"))
	token := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), "Token:"))
	a := &Agent{Socket: filepath.Join(s.dir, "agent.sock")}
	conf := fmt.Sprintf(`agent {
  data_dir = %q
  log_level = "WARN"
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = %q
  trust_domain = %q
  insecure_bootstrap = true
}
plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`, filepath.Join(s.dir, "agent-data"), s.Port, a.Socket, s.TrustDomain)
	cfg := filepath.Join(s.dir, "agent.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, s.dir, "agent", filepath.Join(filepath.Dir(s.bin), "spire-agent"), "run", "-config", cfg, "-joinToken", token)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(a.Socket); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("spire-agent: no Workload API socket\n%s", logOf(s.dir, "agent"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return a
}

// ID is the SPIFFE ID of path in the server's trust domain.
func (s *Server) ID(path string) string { return "spiffe://" + s.TrustDomain + path }

// RegisterUID registers spiffeID for workloads of uid under the agent.
func (s *Server) RegisterUID(t testing.TB, spiffeID string, uid int) {
	t.Helper()
	s.MustRun(t, "entry", "create", "-parentID", s.ID("/node"), "-spiffeID", spiffeID,
		"-selector", "unix:uid:"+strconv.Itoa(uid))
}

// Mint mints a JWT-SVID with the server's CLI (jwt mint), for IDs and
// audiences no registration entry gives.
func (s *Server) Mint(t testing.TB, spiffeID, audience string) string {
	t.Helper()
	out := s.MustRun(t, "jwt", "mint", "-spiffeID", spiffeID, "-audience", audience)
	return strings.TrimSpace(out)
}

// MintTTL is Mint with a lifetime (jwt mint -ttl).
func (s *Server) MintTTL(t testing.TB, spiffeID, audience string, ttl time.Duration) string {
	t.Helper()
	out := s.MustRun(t, "jwt", "mint", "-spiffeID", spiffeID, "-audience", audience, "-ttl", ttl.String())
	return strings.TrimSpace(out)
}

// BundleFile writes the trust domain's SPIFFE bundle (bundle show
// -format spiffe) to a file and returns its path.
func (s *Server) BundleFile(t testing.TB, name string) string {
	t.Helper()
	out := s.MustRun(t, "bundle", "show", "-format", "spiffe")
	p := filepath.Join(s.dir, name)
	if err := os.WriteFile(p+".tmp", []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		t.Fatal(err)
	}
	return p
}

// FetchJWTSVID fetches a JWT-SVID for audience over the agent's Workload
// API with go-spiffe, waiting for the registration to reach the agent.
func (a *Agent) FetchJWTSVID(t testing.TB, audience string) *jwtsvid.SVID {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		svid, err := workloadapi.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience}, workloadapi.WithAddr(a.Addr()))
		cancel()
		if err == nil {
			return svid
		}
		if time.Now().After(deadline) {
			t.Fatalf("fetch JWT-SVID: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// Addr is the agent's Workload API address for go-spiffe.
func (a *Agent) Addr() string { return "unix://" + a.Socket }

// LocalAuthority runs `localauthority jwt <verb>` and returns its output.
func (s *Server) LocalAuthority(t testing.TB, args ...string) string {
	t.Helper()
	return s.MustRun(t, append([]string{"localauthority", "jwt"}, args...)...)
}
