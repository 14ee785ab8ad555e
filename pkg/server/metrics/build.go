package metrics

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Version and Commit name the build when the linker sets them (make build,
// deployments/local/run-stack.sh and the Dockerfile pass
// -ldflags "-X github.com/parleychat/parley/pkg/server/metrics.Commit=...").
// They are the only package variables here: the linker can set nothing
// else, and nothing writes them at run time. A go build in the go.work
// workspace stamps no VCS information, so without them the commit is
// only known to binaries built as a single module (go install).
var (
	Version string
	Commit  string
)

// Build is what parley_build_info reports.
type Build struct {
	Version, Commit, GoVersion string
}

// BuildOf reads the build: the linker's values first, then the VCS
// revision and module version the go command stamped, if any.
func BuildOf() Build {
	b := Build{Version: Version, Commit: Commit, GoVersion: runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		b = fromBuildInfo(b, info)
	}
	if b.Version == "" {
		b.Version = "devel"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}

// fromBuildInfo fills what b lacks from info.
func fromBuildInfo(b Build, info *debug.BuildInfo) Build {
	if b.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		b.Version = info.Main.Version
	}
	if b.Commit != "" {
		return b
	}
	modified := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Commit = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if b.Commit != "" && modified {
		// Built from a tree with uncommitted changes: the revision alone
		// would claim code the binary does not hold.
		b.Commit += "-dirty"
	}
	return b
}

// registerBuild registers parley_build_info{service,version,commit,go_version} = 1.
func registerBuild(reg prometheus.Registerer, service string, b Build) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "parley_build_info",
		Help: "Always 1; its labels name the build: version, commit and Go version.",
		ConstLabels: prometheus.Labels{
			"service": service, "version": b.Version, "commit": b.Commit, "go_version": b.GoVersion,
		},
	})
	g.Set(1)
	reg.MustRegister(g)
}
