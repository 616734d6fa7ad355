// Package version reports what build of Errand is running, from the
// information the Go toolchain stamps into every binary (the module
// version, and the VCS revision, time and dirtiness of the tree it was
// built from), so that no release step has to inject it.
package version

import (
	"runtime"
	"runtime/debug"
)

// Info is a build's identity.
type Info struct {
	// Version is the module version ("v1.2.3" for a tagged module build,
	// "(devel)" for a build from a checkout).
	Version string `json:"version"`
	// Commit is the VCS revision, with "-dirty" when the tree had
	// uncommitted changes; "" when the build has no VCS stamp.
	Commit string `json:"commit,omitempty"`
	// Date is the commit's time (RFC 3339), "" without a VCS stamp.
	Date      string `json:"date,omitempty"`
	GoVersion string `json:"go"`
}

// Get reads the running binary's build information.
func Get() Info {
	info := Info{Version: "(devel)", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	if v := bi.Main.Version; v != "" {
		info.Version = v
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.time":
			info.Date = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && info.Commit != "" {
		info.Commit += "-dirty"
	}
	return info
}

// String is one line: "errand (devel) 0123abcd… 2026-12-06T04:00:00Z go1.26.8".
func (i Info) String() string {
	s := "errand " + i.Version
	if i.Commit != "" {
		s += " " + i.Commit
	}
	if i.Date != "" {
		s += " " + i.Date
	}
	return s + " " + i.GoVersion
}
