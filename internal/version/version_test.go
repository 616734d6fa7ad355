package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestGetNamesTheToolchainAndAVersion(t *testing.T) {
	i := Get()
	if i.GoVersion != runtime.Version() || i.Version == "" {
		t.Fatalf("%+v", i)
	}
	if s := i.String(); !strings.HasPrefix(s, "errand "+i.Version) || !strings.HasSuffix(s, runtime.Version()) {
		t.Fatalf("String() = %q", s)
	}
}
