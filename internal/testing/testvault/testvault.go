// Package testvault runs a real HashiCorp Vault dev server and a throwaway
// PostgreSQL cluster that checks passwords (scram-sha-256), with Vault's
// database secrets engine configured against it, for the Vault tests.
//
// The Vault binary is built once per machine by scripts/build-vault.sh
// into a cache outside the repository (or named by ERRAND_VAULT_BIN).
// Without it the tests skip — except under CI=true, where they fail.
package testvault

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/errandhq/errand/internal/testing/testskip"
	"github.com/errandhq/errand/issuer/vault"
)

// Version is the Vault server version the tests run (see VAULT.md).
const Version = "v1.21.0"

// Env is a running Vault and its PostgreSQL.
type Env struct {
	Addr      string
	RootToken string
	PGPort    int
	pgSuper   string
	dir       string
	vault     *exec.Cmd
	pgBin     string
}

var (
	once   sync.Once
	shared *Env
	errEnv error
)

// Binary is the path of the Vault server binary, or "".
func Binary() string {
	if b := os.Getenv("ERRAND_VAULT_BIN"); b != "" {
		return b
	}
	cache := os.Getenv("ERRAND_VAULT_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "errand-vault")
	}
	return filepath.Join(cache, "bin", "vault-"+Version)
}

// Shared starts (once per test binary) and returns the environment.
func Shared(t testing.TB) *Env {
	t.Helper()
	bin := Binary()
	if st, err := os.Stat(bin); err != nil || st.Mode()&0o111 == 0 {
		msg := fmt.Sprintf("no Vault server binary at %s: build it once with scripts/build-vault.sh (or set ERRAND_VAULT_BIN)", bin)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		testskip.Skip(t, "Vault", msg)
	}
	once.Do(func() { shared, errEnv = start(bin) })
	if errEnv != nil {
		t.Fatalf("testvault: %v", errEnv)
	}
	return shared
}

// Stop ends the shared environment and says how many tests skipped for
// want of Vault (testskip), even without -v; call it from TestMain.
func Stop() {
	defer testskip.Report()
	if shared != nil {
		shared.stop()
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func random() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// asPostgres runs a PostgreSQL server tool, as the postgres user when we
// are root (initdb refuses to run as root).
func asPostgres(name string, args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	}
	return exec.Command(name, args...)
}

func start(bin string) (*Env, error) {
	e := &Env{RootToken: random(), pgSuper: random()}
	out, err := exec.Command("pg_config", "--bindir").Output()
	if err != nil {
		return nil, fmt.Errorf("pg_config: %w", err)
	}
	e.pgBin = strings.TrimSpace(string(out))
	if e.dir, err = os.MkdirTemp("", "errand-vault-test-"); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if u, err := user.Lookup("postgres"); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			_ = os.Chown(e.dir, uid, gid)
		}
	}
	pw := filepath.Join(e.dir, "pw")
	if err := os.WriteFile(pw, []byte(e.pgSuper+"\n"), 0o644); err != nil {
		return nil, err
	}
	data := filepath.Join(e.dir, "pgdata")
	if out, err := asPostgres(filepath.Join(e.pgBin, "initdb"), "-D", data, "-U", "postgres", "--pwfile="+pw,
		"--auth-local=trust", "--auth-host=scram-sha-256").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	if e.PGPort, err = freePort(); err != nil {
		return nil, err
	}
	if out, err := asPostgres(filepath.Join(e.pgBin, "pg_ctl"), "-D", data, "-l", filepath.Join(e.dir, "pg.log"), "-w",
		"-o", fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s", e.PGPort, e.dir), "start").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pg_ctl start: %v: %s", err, out)
	}
	vport, err := freePort()
	if err != nil {
		return nil, err
	}
	e.Addr = fmt.Sprintf("http://127.0.0.1:%d", vport)
	logf, err := os.Create(filepath.Join(e.dir, "vault.log"))
	if err != nil {
		return nil, err
	}
	e.vault = exec.Command(bin, "server", "-dev", "-dev-root-token-id="+e.RootToken,
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", vport))
	e.vault.Stdout, e.vault.Stderr = logf, logf
	e.vault.Env = append(os.Environ(), "VAULT_DEV_ROOT_TOKEN_ID="+e.RootToken)
	if err := e.vault.Start(); err != nil {
		e.stop()
		return nil, err
	}
	if err := e.waitVault(); err != nil {
		e.stop()
		return nil, err
	}
	if err := e.configure(); err != nil {
		e.stop()
		return nil, err
	}
	return e, nil
}

func (e *Env) waitVault() error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		res, err := http.Get(e.Addr + "/v1/sys/health")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("vault dev server did not become healthy (log in %s)", e.dir)
}

// Root is an API client with the root token.
func (e *Env) Root() *vaultapi.Client {
	c, err := vaultapi.NewClient(&vaultapi.Config{Address: e.Addr})
	if err != nil {
		panic(err)
	}
	c.SetToken(e.RootToken)
	return c
}

// configure enables the database secrets engine against the throwaway
// cluster with roles whose logins expire on their own (VALID UNTIL) and
// whose revocation ends open sessions before dropping the role.
func (e *Env) configure() error {
	c := e.Root()
	if err := c.Sys().Mount("database", &vaultapi.MountInput{Type: "database"}); err != nil {
		return err
	}
	if _, err := c.Logical().Write("database/config/pg", map[string]any{
		"plugin_name": "postgresql-database-plugin", "allowed_roles": "task-*",
		"connection_url": fmt.Sprintf("postgresql://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=disable", e.PGPort),
		"username":       "postgres", "password": e.pgSuper,
	}); err != nil {
		return err
	}
	for _, role := range []string{"task-ro", "task-other"} {
		if _, err := c.Logical().Write("database/roles/"+role, map[string]any{
			"db_name": "pg", "default_ttl": "60s", "max_ttl": "300s",
			"creation_statements":   `CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT pg_read_all_data TO "{{name}}";`,
			"revocation_statements": `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}'; DROP ROLE IF EXISTS "{{name}}";`,
		}); err != nil {
			return err
		}
	}
	return nil
}

// Token creates a token holding exactly policy (written under a fresh
// name, returned), without Vault's default policy: renewable, 1 h, a
// child of the root token. It is revoked, with its children, when the
// test ends.
func (e *Env) Token(t testing.TB, policy string) (token, policyName string) {
	t.Helper()
	c := e.Root()
	policyName = "errand-test-" + random()
	if err := c.Sys().PutPolicy(policyName, policy); err != nil {
		t.Fatalf("testvault: policy: %v", err)
	}
	renewable := true
	sec, err := c.Auth().Token().Create(&vaultapi.TokenCreateRequest{Policies: []string{policyName},
		NoDefaultPolicy: true, TTL: "1h", Renewable: &renewable, DisplayName: "errand-test"})
	if err != nil {
		t.Fatalf("testvault: token: %v", err)
	}
	token = sec.Auth.ClientToken
	t.Cleanup(func() { _ = e.Root().Auth().Token().RevokeTree(token) })
	return token, policyName
}

// ErrandToken is a token for Errand's own Vault identity holding exactly
// the policy README documents (vault.Policy), and nothing else.
func (e *Env) ErrandToken(t testing.TB) string {
	t.Helper()
	tok, _ := e.Token(t, vault.Policy(""))
	return tok
}

// PGURL is a URL of the throwaway cluster for a login.
func (e *Env) PGURL(user, password string) string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/postgres?sslmode=disable", user, password, e.PGPort)
}

// SuperURL is the throwaway cluster's superuser URL.
func (e *Env) SuperURL() string { return e.PGURL("postgres", e.pgSuper) }

func (e *Env) stop() {
	if e.vault != nil && e.vault.Process != nil {
		_ = e.vault.Process.Kill()
		_, _ = e.vault.Process.Wait()
	}
	if e.pgBin != "" {
		_ = asPostgres(filepath.Join(e.pgBin, "pg_ctl"), "-D", filepath.Join(e.dir, "pgdata"), "-m", "immediate", "stop").Run()
	}
	if e.dir != "" {
		_ = os.RemoveAll(e.dir)
	}
}

// WithTimeout is a context for one Vault call in a test.
func WithTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}
