// Package version tells which release a binary is. A release build sets
// the version with -ldflags; a `go install …@v1.2.3` build carries it in
// the module's build information, which is read when no flag set it.
package version

import "runtime/debug"

// Fallback is the version of a build from a work tree with no flag set.
const Fallback = "v0.0.0-dev"

// Release is set by `make release` for every command under cmd/
// (-ldflags "-X github.com/vault-registry/vault-plugin-registry/version.Release=v1.2.3"),
// so a command added later is stamped without a flag of its own.
var Release = ""

// Resolve returns set when a build flag set it, else Release, else the main
// module's version from the build information, else Fallback.
func Resolve(set string) string {
	if set != "" {
		return set
	}
	if Release != "" {
		return Release
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return Fallback
	}
	return fromModule(info.Main.Version)
}

// fromModule keeps a module version that names a release or a
// pseudo-version; "(devel)" and an empty one are a work tree's build.
func fromModule(v string) string {
	if v == "" || v == "(devel)" {
		return Fallback
	}
	return v
}
