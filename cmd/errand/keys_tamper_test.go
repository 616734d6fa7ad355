package main

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/jackc/pgx/v5"

	"github.com/errandhq/errand/broker"
	"github.com/errandhq/errand/config"
	"github.com/errandhq/errand/internal/app"
	"github.com/errandhq/errand/internal/testing/testoidc"
	"github.com/errandhq/errand/internal/testing/testpg"
	"github.com/errandhq/errand/store/sqlite"
)

// keyDB is raw SQL on the database a serve test runs on, as someone who
// can write it (the schema's owner, or whoever can write the SQLite file)
// would use it.
type keyDB interface {
	// exec runs the statements in one transaction, committed only when
	// commit is set (a refused statement must leave the store unchanged
	// even on a schema that does not refuse it).
	exec(t *testing.T, commit bool, stmts ...string) error
	// bypass switches the key table's triggers off (the owner can), and
	// restore switches them on again.
	bypass() []string
	restore() []string
}

type pgKeyDB struct{ url string }

func (d pgKeyDB) exec(t *testing.T, commit bool, stmts ...string) error {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, d.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, q := range stmts {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	if commit {
		return tx.Commit(ctx)
	}
	return nil
}

func (pgKeyDB) bypass() []string  { return []string{"ALTER TABLE signing_keys DISABLE TRIGGER USER"} }
func (pgKeyDB) restore() []string { return []string{"ALTER TABLE signing_keys ENABLE TRIGGER USER"} }

type sqliteKeyDB struct{ db *sql.DB }

func (d sqliteKeyDB) exec(t *testing.T, commit bool, stmts ...string) error {
	t.Helper()
	tx, err := d.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	for _, q := range stmts {
		if _, err := tx.Exec(q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	if commit {
		return tx.Commit()
	}
	return nil
}

// SQLite's triggers cannot be switched off: whoever writes the file drops
// them.
func (sqliteKeyDB) bypass() []string {
	return []string{"DROP TRIGGER IF EXISTS signing_keys_no_delete", "DROP TRIGGER IF EXISTS signing_keys_no_replace"}
}
func (sqliteKeyDB) restore() []string { return nil }

// around puts stmts between db's bypass and restore.
func around(db keyDB, stmts ...string) []string {
	return append(append(db.bypass(), stmts...), db.restore()...)
}

// TestH02TamperedSigningKeyRowsAreNeverPublished reproduces H02 on both
// stores against a running serve: the current key's row deleted and
// inserted again with the same sealed private key beside an attacker's
// public JWK, then a new row beside it with a copied sealed key and the
// attacker's public half. Deleting a key row is refused by the schema;
// with the triggers switched off (the table's owner can), the rows are
// refused by Errand: the JWKS never serves the attacker's key, Errand's
// tokens keep verifying offline and at introspection, a token the
// attacker signs does not, the alarm is raised (ERROR line, metric,
// keys.refused events), and a fresh replica refuses to start on them.
func TestH02TamperedSigningKeyRowsAreNeverPublished(t *testing.T) {
	app.KeyReloadEvery = 50 * time.Millisecond
	t.Cleanup(func() { app.KeyReloadEvery = 10 * time.Second })
	t.Run("postgres", func(t *testing.T) {
		u := testpg.NewDatabase(t)
		testTamperedKeys(t, u, pgKeyDB{url: u})
	})
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "errand.db")
		st, err := sqlite.Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		testTamperedKeys(t, "sqlite://"+path, sqliteKeyDB{db: st.DB()})
	})
}

func testTamperedKeys(t *testing.T, dbURL string, db keyDB) {
	t.Setenv("ERRAND_SYSTEM_SECRET", strings.Repeat("k", 32))
	agents, users, resources := testoidc.New(t), testoidc.New(t), testoidc.New(t)
	path := writeConfig(t, dbURL, agents, users, resources)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	addr, _ := startServe(t, cfg, slog.New(slog.NewTextHandler(logs, nil)))
	base := "http://" + addr
	agent := agents.Token(t, "ci-bot", "errand", nil)
	user := users.Token(t, "alice", "errand", map[string]any{"groups": []string{"engineers"}})
	rs := resources.Token(t, "gw", "errand", nil)
	id := callJSON(t, base, "POST", "/v1/tasks", agent, map[string]any{"on_behalf_of": "alice", "goal": "g",
		"scopes": []string{"github.repo.read:acme/**"}, "audiences": []string{"https://api.github.com"}})["id"].(string)
	callJSON(t, base, "POST", "/v1/tasks/"+id+"/approve", user, map[string]any{})
	mint := func() string {
		return callJSON(t, base, "POST", "/v1/tasks/"+id+"/tokens", agent, map[string]any{
			"scopes": []string{"github.repo.read:acme/api"}, "audience": "https://api.github.com"})["access_token"].(string)
	}
	active := func(tok string) bool {
		return callJSON(t, base, "POST", "/v1/introspect", rs, url.Values{"token": {tok}})["active"] == true
	}
	tok := mint()
	kid := kidOfToken(t, tok)
	if !verifiesOffline(t, base, tok) {
		t.Fatal("Errand's token does not verify with its JWKS before any tampering")
	}

	// The schema refuses to delete (or replace) a key row, to its owner too.
	for _, q := range []string{
		"DELETE FROM signing_keys WHERE kid = '" + kid + "'",
		"DELETE FROM signing_keys",
	} {
		if err := db.exec(t, false, q); err == nil || !strings.Contains(err.Error(), "never deleted") {
			t.Errorf("%s: %v, want the trigger's refusal", q, err)
		}
	}
	if _, ok := db.(pgKeyDB); ok {
		if err := db.exec(t, false, "TRUNCATE signing_keys"); err == nil || !strings.Contains(err.Error(), "never deleted") {
			t.Errorf("TRUNCATE signing_keys: %v, want the trigger's refusal", err)
		}
	} else if err := db.exec(t, false, "INSERT OR REPLACE INTO signing_keys SELECT * FROM signing_keys WHERE kid = '"+kid+"'"); err == nil ||
		!strings.Contains(err.Error(), "never replaced") {
		t.Errorf("INSERT OR REPLACE of a key row: %v, want the trigger's refusal", err)
	}

	// The attack, with the triggers switched off: the current key's row
	// again, with its own sealed private key and the attacker's public JWK.
	attPub, attPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	attJWK := func(kid string) string {
		b, err := (&jose.JSONWebKey{Key: attPub, KeyID: kid, Algorithm: "EdDSA", Use: "sig"}).MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	attX := base64.RawURLEncoding.EncodeToString(attPub)
	cols := "kid, alg, private_key, public_jwk, state, created_at, activated_at, deactivated_at, retired_at"
	if err := db.exec(t, true, around(db,
		"CREATE TEMP TABLE stolen AS SELECT * FROM signing_keys WHERE kid = '"+kid+"'",
		"DELETE FROM signing_keys WHERE kid = '"+kid+"'",
		"INSERT INTO signing_keys ("+cols+") SELECT kid, alg, private_key, '"+attJWK(kid)+
			"', state, created_at, activated_at, deactivated_at, retired_at FROM stolen",
		"DROP TABLE stolen")...); err != nil {
		t.Fatalf("delete and insert of the current key's row: %v", err)
	}
	refusedEvents := waitForRefusal(t, base, dbURL, attX, 1)
	var d struct{ KID, Reason string }
	if err := json.Unmarshal(refusedEvents[0].Detail, &d); err != nil || d.KID != kid || !strings.Contains(d.Reason, "public JWK") {
		t.Fatalf("keys.refused detail %s, want the current key and the public JWK as the reason", refusedEvents[0].Detail)
	}

	// Errand's tokens, old and new, keep verifying, offline and at
	// introspection; the attacker's does not.
	fresh := mint()
	for _, tk := range []string{tok, fresh} {
		if !verifiesOffline(t, base, tk) || !active(tk) {
			t.Fatal("an Errand token no longer verifies after the tampering")
		}
	}
	forged := forge(t, tok, attPriv)
	if verifiesOffline(t, base, forged) || active(forged) {
		t.Fatal("a token signed with the attacker's key verifies")
	}

	// A new row beside it: the attacker's kid and public JWK with a sealed
	// private key copied from the current row.
	attKID := jwkThumbprint(t, attPub)
	if err := db.exec(t, true, "INSERT INTO signing_keys ("+cols+") SELECT '"+attKID+"', alg, private_key, '"+attJWK(attKID)+
		"', 'previous', created_at, activated_at, created_at, NULL FROM signing_keys WHERE kid = '"+kid+"'"); err != nil {
		t.Fatalf("insert of a new key row: %v", err)
	}
	waitForRefusal(t, base, dbURL, attX, 2)
	if !verifiesOffline(t, base, mint()) || !active(tok) {
		t.Fatal("Errand's tokens no longer verify after the second row")
	}

	if !strings.Contains(logs.String(), `level=ERROR msg="signing key refused`) {
		t.Fatalf("no ERROR line for the refused keys:\n%s", logs.String())
	}
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(metrics), "\nerrand_signing_keys_refused_total 2\n") {
		t.Fatalf("errand_signing_keys_refused_total is not 2:\n%s", metrics)
	}
	// A fresh replica refuses the set; errand keys list says why.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), true, nil); err == nil ||
		!strings.Contains(err.Error(), "refused") {
		t.Fatalf("a replica started on the tampered keys: %v", err)
	}
	if out := runCLI(t, "keys", "list", "--config", path); strings.Count(out, "REFUSED: signing key ") != 2 {
		t.Fatalf("keys list does not name the two refused keys:\n%s", out)
	}
}

// waitForRefusal waits until n keys.refused events are recorded, failing
// at once if the JWKS ever serves the attacker's key (x), then checks
// over several more reloads that it still does not.
func waitForRefusal(t *testing.T, base, dbURL, x string, n int) []broker.AuditEvent {
	t.Helper()
	st, err := app.Open(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	served := func() {
		res, err := http.Get(base + "/.well-known/jwks.json")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if strings.Contains(string(b), x) {
			t.Fatalf("the JWKS serves the attacker's key:\n%s", b)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		served()
		evs, err := st.Store.AuditEvents(context.Background(), broker.HistoryFilter{Type: "keys.refused", Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) >= n {
			for end := time.Now().Add(10 * app.KeyReloadEvery); time.Now().Before(end); time.Sleep(app.KeyReloadEvery / 2) {
				served()
			}
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys.refused events after 10 s, want %d", len(evs), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// verifiesOffline checks tok as a resource server does: with the key of
// its kid in the served JWKS.
func verifiesOffline(t *testing.T, base, tok string) bool {
	t.Helper()
	res, err := http.Get(base + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(res.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	keys := set.Key(kidOfToken(t, tok))
	if len(keys) != 1 {
		return false
	}
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	_, err = jws.Verify(keys[0].Key)
	return err == nil
}

// forge signs tok's header and claims with priv.
func forge(t *testing.T, tok string, priv ed25519.PrivateKey) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	input := parts[0] + "." + parts[1]
	return input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(input)))
}

func jwkThumbprint(t *testing.T, pub ed25519.PublicKey) string {
	t.Helper()
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}
