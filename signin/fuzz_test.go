package signin_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/errandhq/errand/signin"
)

// FuzzSafeReturnTo: whatever return_to SafeReturnTo accepts, a browser
// resolving it against Errand's URL stays on Errand's origin.
func FuzzSafeReturnTo(f *testing.F) {
	for _, s := range []string{"/ui/", "//evil", "/\\evil", "https://evil/", "/ui/tasks/1?x=1#y", "/%2F%2Fevil", "/\t/evil", "/ui/../..//evil"} {
		f.Add(s)
	}
	base, _ := url.Parse("https://errand.example/ui/login")
	f.Fuzz(func(t *testing.T, p string) {
		got, ok := signin.SafeReturnTo(p)
		if !ok {
			return
		}
		if got != p {
			t.Fatalf("SafeReturnTo(%q) rewrote it to %q", p, got)
		}
		// Browsers drop tabs and newlines from URLs and read "\" as "/":
		// neither may turn the path into another host.
		for _, variant := range []string{p, strings.NewReplacer("\t", "", "\n", "", "\r", "").Replace(p), strings.ReplaceAll(p, "\\", "/")} {
			ref, err := url.Parse(variant)
			if err != nil {
				t.Fatalf("accepted %q, which does not parse: %v", p, err)
			}
			if u := base.ResolveReference(ref); u.Host != "errand.example" || u.Scheme != "https" {
				t.Fatalf("accepted %q, which leads to %s", p, u)
			}
		}
	})
}
