package version

import "testing"

func TestResolve_flagWins(t *testing.T) {
	if got := Resolve("v1.2.3"); got != "v1.2.3" {
		t.Fatalf("Resolve(v1.2.3) = %q", got)
	}
}

func TestFromModule(t *testing.T) {
	for in, want := range map[string]string{
		"":                                   Fallback,
		"(devel)":                            Fallback,
		"v0.2.0":                             "v0.2.0",
		"v0.2.1-0.20261206041400-0cbc658aa1": "v0.2.1-0.20261206041400-0cbc658aa1",
	} {
		if got := fromModule(in); got != want {
			t.Errorf("fromModule(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolve_testBinaryIsAWorkTreeBuild(t *testing.T) {
	// A test binary's main module version is "(devel)" or empty.
	if got := Resolve(""); got != Fallback {
		t.Fatalf("Resolve(\"\") in a test = %q, want %q", got, Fallback)
	}
}

func TestResolve_releaseStampsEveryCommand(t *testing.T) {
	defer func(old string) { Release = old }(Release)
	Release = "v1.4.0"
	if got := Resolve(""); got != "v1.4.0" {
		t.Fatalf("Resolve(\"\") with Release set = %q", got)
	}
	if got := Resolve("v1.2.3"); got != "v1.2.3" {
		t.Fatalf("a command's own flag loses to Release: %q", got)
	}
}
