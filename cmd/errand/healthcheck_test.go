package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/errandhq/errand/internal/testing/testoidc"
)

// TestHealthcheckProbesAServersReadyz runs `errand serve` (on SQLite, as
// the container image would, its address given by ERRAND_LISTEN over the
// config's listen) and probes it with `errand healthcheck`: healthy while it
// serves, unhealthy on a path with no /readyz and once it has stopped.
func TestHealthcheckProbesAServersReadyz(t *testing.T) {
	t.Setenv("ERRAND_SYSTEM_SECRET", strings.Repeat("k", 32))
	db := "sqlite://" + filepath.Join(t.TempDir(), "errand.db")
	path := writeConfig(t, db, testoidc.New(t), testoidc.New(t), testoidc.New(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	t.Setenv("ERRAND_LISTEN", addr)

	root := newRoot()
	root.SetArgs([]string{"serve", "--config", path})
	root.SetErr(&syncBuffer{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	base := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := runCLIErr("healthcheck", "--url", base, "--timeout", "1s")
		if err == nil {
			break
		}
		select {
		case serr := <-done:
			t.Fatalf("serve returned %v", serr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthcheck of %s did not pass in 20 s: %v", base, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The pending counts come from SQLite here (PostgreSQL in
	// TestMetricsForDashboardsAndAlerts); a failed query leaves them out.
	if s, _ := scrape(t, base); s["errand_tasks_pending"] != 0 || s["errand_step_ups_pending"] != 0 {
		t.Errorf("pending counts on SQLite: %v", s)
	} else if _, names := scrape(t, base); !names["errand_tasks_pending"] || !names["errand_step_ups_pending"] {
		t.Error("errand_tasks_pending or errand_step_ups_pending missing on SQLite")
	}
	if _, err := runCLIErr("healthcheck", "--url", base+"/no-such-prefix"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("healthcheck of a URL whose /readyz is 404: %v, want a failure naming 404", err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("serve did not stop")
	}
	if _, err := runCLIErr("healthcheck", "--url", base, "--timeout", "1s"); err == nil {
		t.Fatal("healthcheck passed against a stopped server")
	}
	if got := newServe().Flags().Lookup("listen").DefValue; got != addr {
		t.Fatalf("serve --listen defaults to %q, want ERRAND_LISTEN %q", got, addr)
	}
}

// exactTag is an image reference with a major.minor.patch tag.
var exactTag = regexp.MustCompile(`:[0-9]+\.[0-9]+\.[0-9]+[^:/]*$`)

// TestDockerfileProbesWhereTheImageListens: the image's HEALTHCHECK runs
// `errand healthcheck` with its default URL, so that URL's port must be
// the one ERRAND_LISTEN binds on every interface and EXPOSE names; the
// image's serve does not migrate (as the systemd unit), and no base image
// floats on a moving tag.
func TestDockerfileProbesWhereTheImageListens(t *testing.T) {
	raw, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(strings.TrimPrefix(defaultHealthcheckURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	var listen, expose, health, command string
	lines := strings.Split(strings.ReplaceAll(string(raw), "\\\n", " "), "\n")
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "ENV":
			for _, kv := range f[1:] {
				if v, ok := strings.CutPrefix(kv, "ERRAND_LISTEN="); ok {
					listen = v
				}
			}
		case "EXPOSE":
			expose = f[1]
		case "HEALTHCHECK":
			health = l
		case "CMD":
			command = l
		case "FROM":
			image := f[1]
			// distroless has no version tags: its digest is its pin.
			if !exactTag.MatchString(image) && !strings.HasPrefix(image, "gcr.io/distroless/") {
				t.Errorf("FROM %s: pin an exact version tag (and a digest where a registry is reachable)", image)
			}
		}
	}
	if listen != "0.0.0.0:"+port || expose != port {
		t.Errorf("ERRAND_LISTEN=%q, EXPOSE %q; errand healthcheck probes %s", listen, expose, defaultHealthcheckURL)
	}
	if !strings.Contains(health, `CMD ["/usr/local/bin/errand", "healthcheck"]`) {
		t.Errorf("HEALTHCHECK is %q, want the binary's own healthcheck (the image has no shell)", health)
	}
	if !strings.Contains(command, `"--no-migrate"`) {
		t.Errorf("CMD is %q: serve should not migrate on start (errand migrate runs once, as the schema owner)", command)
	}
}
