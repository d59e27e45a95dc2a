package backend

import (
	"strings"
	"testing"
	"time"
)

func TestRobots_cannotBeLockedOutAndCostNoBcrypt(t *testing.T) {
	f := newFixture(t)
	cfg := f.config()
	cfg.LockoutThreshold, cfg.LockoutDuration = 2, time.Hour
	f.saveConfig(cfg)
	if _, err := f.b.WriteRole(f.ctx, f.s, "ci", RoleUpdate{Access: ptr("repository:team/*:pull")}, LeaseLimits{}); err != nil {
		t.Fatal(err)
	}
	c, err := f.b.IssueRobot(f.ctx, f.s, "ci", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		// As for an unknown name: 401, then 429 past the threshold.
		if _, err := f.mint(TokenRequest{Username: c.Name, Password: "guess"}); errKind(err) != KindUnauthorized && errKind(err) != KindLockedOut {
			t.Fatalf("wrong robot secret: %v, want 401 or 429", err)
		}
	}
	runs := f.b.BcryptRuns()
	for range 3 {
		if _, err := f.mint(TokenRequest{Username: c.Name, Password: c.Password}); err != nil {
			t.Fatalf("robot after guesses of its name: %v", err)
		}
	}
	if got := f.b.BcryptRuns(); got != runs {
		t.Errorf("robot logins ran bcrypt %d times", got-runs)
	}
	// A wrong secret costs what an unknown user's costs: one decoy check.
	if _, err := f.mint(TokenRequest{Username: c.Name, Password: "guess"}); err == nil {
		t.Fatal("a wrong robot secret was accepted")
	}
	if got := f.b.BcryptRuns(); got != runs+1 {
		t.Errorf("a wrong robot secret ran bcrypt %d times, an unknown user's 1", got-runs)
	}
}

func TestRobots_secretIsStoredOnlyAsItsHMAC(t *testing.T) {
	f := newFixture(t)
	if _, err := f.b.WriteRole(f.ctx, f.s, "ci", RoleUpdate{Access: ptr("repository:team/*:pull")}, LeaseLimits{}); err != nil {
		t.Fatal(err)
	}
	c, err := f.b.IssueRobot(f.ctx, f.s, "ci", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := f.s.List(f.ctx, "")
	for _, dir := range keys {
		sub, _ := f.s.List(f.ctx, dir)
		for _, k := range append(sub, "") {
			e, _ := f.s.Get(f.ctx, dir+k)
			if e != nil && len(c.Password) > 0 && contains(e.Value, c.Password) {
				t.Errorf("storage %s holds the robot's secret", dir+k)
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }
