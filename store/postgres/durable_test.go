package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/store/postgres"
)

// TestF03RefusesAsynchronousCommit: a session that would acknowledge a
// commit before it is flushed is refused, whether the setting comes with
// the URL or is made for the database after Errand started (it reaches
// only the connections opened later, which are checked one by one).
func TestF03RefusesAsynchronousCommit(t *testing.T) {
	ctx := context.Background()
	url := testpg.NewPackageDatabase(t)
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	for _, v := range []string{"off", "local"} {
		_, err := postgres.Open(ctx, postgres.Config{URL: url + sep + "options=-c%20synchronous_commit%3D" + v})
		if err == nil || !strings.Contains(err.Error(), "synchronous_commit") {
			t.Fatalf("synchronous_commit=%s in the URL: Open = %v, want a refusal naming synchronous_commit", v, err)
		}
	}
	st, err := postgres.Open(ctx, postgres.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var name string
	if err := st.Pool().QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Pool().Exec(ctx, `ALTER DATABASE "`+name+`" SET synchronous_commit = off`); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = st.Pool().Exec(ctx, `ALTER DATABASE "`+name+`" RESET synchronous_commit`) }()
	// Hold every pooled connection so that the next acquire must connect.
	var held []func()
	defer func() {
		for _, r := range held {
			r()
		}
	}()
	for i := int32(0); i < st.Pool().Stat().MaxConns(); i++ {
		c, err := st.Pool().Acquire(ctx)
		if err != nil {
			if !strings.Contains(err.Error(), "synchronous_commit") {
				t.Fatalf("a new connection after ALTER DATABASE: %v, want a refusal naming synchronous_commit", err)
			}
			return
		}
		var sc string
		if err := c.QueryRow(ctx, "SHOW synchronous_commit").Scan(&sc); err != nil {
			t.Fatal(err)
		}
		if sc == "off" {
			t.Fatal("the pool handed out a connection that commits asynchronously")
		}
		held = append(held, c.Release)
	}
	t.Fatal("every connection was opened before the ALTER: the test could not reach a new one")
}
