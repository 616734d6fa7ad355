// Package testbrowser starts a headless Chromium for the tests that drive
// Errand's pages in a real browser (chromedp). Chromium is Debian's
// chromium package (.ci/run installs it); ERRAND_CHROMIUM names another
// binary. Without one the tests skip — except under CI=true, where they
// fail.
package testbrowser

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/errandhq/errand/internal/testing/testskip"
)

// EnvBinary names the Chromium binary, when it is not chromium on PATH.
const EnvBinary = "ERRAND_CHROMIUM"

// Path finds Chromium, or skips t (fails it under CI=true).
func Path(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(EnvBinary); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("Chromium is required under CI=true: apt-get install chromium, or set %s", EnvBinary)
	}
	testskip.Skip(t, "Chromium", "no chromium on PATH (apt-get install chromium, or set "+EnvBinary+")")
	return ""
}

// Browser is one headless Chromium for a test, stopped when it ends.
type Browser struct {
	t    testing.TB
	root context.Context
}

// New starts Chromium (or skips t, see Path).
func New(t testing.TB) *Browser {
	t.Helper()
	path := Path(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900), chromedp.UserDataDir(t.TempDir()))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	root, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	if err := chromedp.Do(root); err != nil {
		t.Fatalf("start Chromium (%s): %v", path, err)
	}
	return &Browser{t: t, root: root}
}

// Person is a browser context of its own (its own cookies, like a
// private window): one person at one browser.
func (b *Browser) Person() context.Context {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.root, chromedp.WithNewBrowserContext())
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("open a browser context: %v", err)
	}
	return ctx
}

// Do runs steps in ctx within a time limit, failing t on error.
func Do(t testing.TB, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(c, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Text is the text of the first element selector matches.
func Text(t testing.TB, ctx context.Context, selector string) string {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	s, err := chromedp.Run(c, chromedp.Text(chromedp.CSS(selector)))
	if err != nil {
		t.Fatalf("text of %s: %v", selector, err)
	}
	return s
}

// Eval evaluates a JavaScript expression through DevTools (not the page's
// own scripts, which the pages' CSP forbids) and returns its value.
func Eval[T any](t testing.TB, ctx context.Context, expr string) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// NoScript turns off the pages' scripts in ctx's tab (DevTools' own calls
// still run), to show that a page works without JavaScript.
func NoScript(t testing.TB, ctx context.Context) {
	t.Helper()
	err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		return err
	}))
	if err != nil {
		t.Fatalf("turn scripts off: %v", err)
	}
}
