package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/errandhq/errand/notify"
)

// TestDevDeliversNotifications: errand dev --config takes the file's
// webhooks; the worker it starts posts a task's creation, signed (the
// standard-webhooks library verifies it), linking to the task's page
// under dev's own URL.
func TestDevDeliversNotifications(t *testing.T) {
	t.Setenv("ERRAND_SYSTEM_SECRET", "")
	t.Setenv("ERRAND_DATABASE_URL", "")
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		t.Fatal(err)
	}
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key[:])
	type got struct {
		header http.Header
		body   []byte
	}
	var (
		mu       sync.Mutex
		received []got
	)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		received = append(received, got{r.Header.Clone(), b})
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hook.secret"), []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := `issuers:
  - {url: "https://agents.example", audience: errand, kind: agent}
  - {url: "https://users.example", audience: errand, kind: user, groups_claim: groups}
grants:
  - {group: eng, scopes: ["github.repo.read:acme/**"]}
actions:
  - {name: github.repo.read, class: read, risk: low}
audiences: ["https://api.github.com"]
notifications:
  webhooks:
    - {url: "` + rcv.URL + `/errand", secret_file: hook.secret, events: [task.created]}
`
	path := filepath.Join(dir, "errand.yaml")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDevOptions(t, devOptions{config: path})
	agent := strings.TrimSpace(d.must(t, "dev", "token", "--kind", "agent", "--sub", "agent-1"))
	id := strings.TrimSpace(d.must(t, "task", "create", "-q", "--token", agent, "--on-behalf-of", "alice",
		"--goal", "read the repo", "--scope", "github.repo.read:acme/api", "--audience", "https://api.github.com"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(received)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no notification within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	r := received[0]
	mu.Unlock()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(r.body, r.header); err != nil {
		t.Fatalf("signature: %v", err)
	}
	var p notify.Payload
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatal(err)
	}
	if p.Type != "task.created" || p.Data.TaskID != id || p.Data.URL != d.base+"/ui/tasks/"+id || p.Data.AgentGoal != "read the repo" {
		t.Fatalf("notification %+v", p)
	}
}
