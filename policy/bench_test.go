package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/errandhq/errand/broker"
)

// benchSet writes n policies of the shapes organisations write (a few
// permits, many forbids on tools, datasets, resources, environments and
// groups, some step-ups), none of which forbids the benchmark's request,
// so that every policy is evaluated on every decision.
func benchSet(b *testing.B, n int) *CedarSet {
	b.Helper()
	var sb strings.Builder
	for i := 0; i < n; i++ {
		switch i % 10 {
		case 0:
			fmt.Fprintf(&sb, "@id(\"p%d\") permit (principal is Agent, action, resource) when { context.class == \"read\" };\n", i)
		case 1, 2:
			fmt.Fprintf(&sb, "@id(\"p%d\") forbid (principal, action, resource) when { context.tool == \"tool-%d\" };\n", i, i)
		case 3, 4:
			fmt.Fprintf(&sb, "@id(\"p%d\") forbid (principal, action, resource) when { context.dataset like \"secret-%d/*\" };\n", i, i)
		case 5:
			fmt.Fprintf(&sb, "@id(\"p%d\") forbid (principal, action == Action::\"github.pr.write\", resource) when { resource.path like \"repo-%d/*\" };\n", i, i)
		case 6:
			fmt.Fprintf(&sb, "@id(\"p%d\") forbid (principal, action, resource) when { context.environment == \"env-%d\" && context.risk == \"high\" };\n", i, i)
		case 7:
			fmt.Fprintf(&sb, "@id(\"p%d\") forbid (principal, action, resource) when { context.operation == \"mint\" && resource.path == \"team-%d/db\" } unless { context.user in Group::\"team-%d\" };\n", i, i, i)
		case 8:
			fmt.Fprintf(&sb, "@id(\"p%d\") @step_up(\"r%d\") forbid (principal, action, resource) when { context.environment == \"prod-%d\" && context.class == \"write\" };\n", i, i, i)
		case 9:
			fmt.Fprintf(&sb, "@id(\"p%d\") forbid (principal, action, resource) when { context.time.toTime() < duration(\"1h\") && context.audience == \"https://aud-%d\" };\n", i, i)
		}
	}
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bench.cedar"), []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	s, err := Load([]string{filepath.Join(dir, "bench.cedar")}, "")
	if err != nil {
		b.Fatal(err)
	}
	if s.Len() != n {
		b.Fatalf("loaded %d policies", s.Len())
	}
	return s
}

// benchSetRego is benchSet in Rego, rule for rule.
func benchSetRego(b *testing.B, n int) *RegoSet {
	b.Helper()
	var sb strings.Builder
	sb.WriteString("package errand\n\n")
	for i := 0; i < n; i++ {
		switch i % 10 {
		case 0:
			fmt.Fprintf(&sb, "allow contains \"p%d\" if {\n\tinput.principal.type == \"agent\"\n\tinput.context.class == \"read\"\n}\n", i)
		case 1, 2:
			fmt.Fprintf(&sb, "deny contains \"p%d\" if input.context.tool == \"tool-%d\"\n", i, i)
		case 3, 4:
			fmt.Fprintf(&sb, "deny contains \"p%d\" if startswith(input.context.dataset, \"secret-%d/\")\n", i, i)
		case 5:
			fmt.Fprintf(&sb, "deny contains \"p%d\" if {\n\tinput.action == \"github.pr.write\"\n\tstartswith(input.resource.path, \"repo-%d/\")\n}\n", i, i)
		case 6:
			fmt.Fprintf(&sb, "deny contains \"p%d\" if {\n\tinput.context.environment == \"env-%d\"\n\tinput.context.risk == \"high\"\n}\n", i, i)
		case 7:
			fmt.Fprintf(&sb, "deny contains \"p%d\" if {\n\tinput.context.operation == \"mint\"\n\tinput.resource.path == \"team-%d/db\"\n\tnot \"team-%d\" in input.user.groups\n}\n", i, i, i)
		case 8:
			fmt.Fprintf(&sb, "step_up[\"p%d\"] := \"r%d\" if {\n\tinput.context.environment == \"prod-%d\"\n\tinput.context.class == \"write\"\n}\n", i, i, i)
		case 9:
			fmt.Fprintf(&sb, "deny contains \"p%d\" if {\n\ttime.clock([time.parse_rfc3339_ns(input.context.time), \"UTC\"])[0] < 1\n\tinput.context.audience == \"https://aud-%d\"\n}\n", i, i)
		}
	}
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bench.rego"), []byte(sb.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	s, err := LoadRego([]string{filepath.Join(dir, "bench.rego")}, "", 0)
	if err != nil {
		b.Fatal(err)
	}
	if s.Len() != n {
		b.Fatalf("loaded %d rules", s.Len())
	}
	return s
}

// BenchmarkDecide is the cost of one policy decision (one scope, one
// audience) at 10 and 100 policies, with each engine, on equivalent sets.
func BenchmarkDecide(b *testing.B) {
	for _, engine := range engines {
		for _, n := range []int{10, 100} {
			b.Run(fmt.Sprintf("%s/policies=%d", engine, n), func(b *testing.B) {
				var s Set = benchSet(b, n)
				if engine == EngineOPA {
					s = benchSetRego(b, n)
				}
				r := req(nil)
				if d := s.Decide(r); d.Effect != broker.EffectAllow {
					b.Fatalf("the benchmark request must be allowed: %v", d)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					s.Decide(r)
				}
			})
		}
	}
}
