package httpapi

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/errandhq/errand/internal/version"
)

// TestBuildIsVisibleToOperators: /healthz names the version and
// /metrics carries errand_build_info with the build's labels.
func TestBuildIsVisibleToOperators(t *testing.T) {
	e := newEnv(t)
	v := version.Get()
	if r := e.mustStatus(e.do("GET", "/healthz", "", nil), 200); r.str("version") != v.Version {
		t.Fatalf("healthz: %s", r.Raw)
	}
	res, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	want := `errand_build_info{commit="` + v.Commit + `",goversion="` + v.GoVersion + `",version="` + v.Version + `"} 1`
	if !strings.Contains(string(body), want) {
		t.Fatalf("/metrics lacks %s", want)
	}
}
