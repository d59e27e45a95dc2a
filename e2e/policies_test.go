//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// policyToken writes a policy file of deploy/policies as name and returns
// a token with only that policy.
func policyToken(t *testing.T, v *Vault, name, file string) string {
	t.Helper()
	v.CLI(t, "policy", "write", name, filepath.Join("..", "deploy", "policies", file))
	return strings.TrimSpace(v.CLI(t, "token", "create", "-policy="+name, "-no-default-policy", "-orphan", "-field=token"))
}

// mountTypes reads `vault secrets list` as root: path → type.
func mountTypes(t *testing.T, v *Vault) map[string]string {
	t.Helper()
	var mounts map[string]struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal([]byte(v.CLI(t, "secrets", "list", "-format=json")), &mounts); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for p, m := range mounts {
		out[p] = m.Type
	}
	return out
}

// TestDeploy_operatorPolicyMovesOnlyTheRegistryMounts: a token of
// deploy/policies/operator.hcl cannot move another team's KV mount
// (payments/) into a registry name, read it, or mount another engine type
// at a registry name; the migration's own moves (the README's recipe and
// its roll back) still work with it.
func TestDeploy_operatorPolicyMovesOnlyTheRegistryMounts(t *testing.T) {
	v := StartVault(t)
	v.CLI(t, "secrets", "enable", "-path=payments", "-version=1", "kv")
	v.CLI(t, "write", "payments/db", "password=payments-secret-7c1")
	operator := policyToken(t, v, "registry-operator", "operator.hcl")
	asOperator := func(args ...string) (string, error) {
		out, errOut, err := v.tryCLIWithToken(operator, args...)
		return out + errOut, err
	}
	for _, args := range [][]string{
		{"secrets", "move", "payments", "registry-new"},
		{"secrets", "move", "payments/", "registry/"},
		{"write", "sys/remount", "from=payments", "to=registry-new"},
		{"write", "sys/remount", "from=payments/", "to=registry-godoauth/"},
		{"write", "sys/remount", "from=registry-new", "to=payments-copy"},
		{"read", "payments/db"},
		{"write", "payments/db", "password=overwritten"},
		{"secrets", "enable", "-path=registry-new", "kv"},
		{"secrets", "enable", "-path=registry-godoauth", "-version=1", "kv"},
	} {
		if out, err := asOperator(args...); err == nil || !strings.Contains(out, "permission denied") {
			t.Errorf("vault %s as the operator: want permission denied, got %v: %s", strings.Join(args, " "), err, truncate([]byte(out), 300))
		}
	}
	if m := mountTypes(t, v); m["payments/"] != "kv" || m["registry-new/"] != "" {
		t.Fatalf("mounts after the refused moves: %v", m)
	}
	if out := v.CLI(t, "read", "-field=password", "payments/db"); strings.TrimSpace(out) != "payments-secret-7c1" {
		t.Errorf("payments/db now %q", out)
	}

	// The migration's moves, as the README's recipe writes them.
	v.CLI(t, "secrets", "enable", "-path=registry", "generic") // godoauth's mount, an administrator's
	for _, args := range [][]string{
		{"secrets", "enable", "-path=registry-new", pluginName},
		{"secrets", "move", "registry", "registry-godoauth"},
		{"secrets", "move", "registry-new", "registry"},
		{"secrets", "move", "registry", "registry-new"}, // the roll back
		{"secrets", "move", "registry-godoauth", "registry"},
		{"write", "sys/remount", "from=registry", "to=registry-godoauth"}, // the API's form
	} {
		if out, err := asOperator(args...); err != nil || strings.Contains(out, "Failure") {
			t.Fatalf("vault %s as the operator: %v %s", strings.Join(args, " "), err, truncate([]byte(out), 300))
		}
	}
	waitFor(t, "the last move", nil, startTimeout, func() error {
		if m := mountTypes(t, v); m["registry-godoauth/"] != "generic" || m["registry-new/"] != pluginName || m["payments/"] != "kv" {
			return fmt.Errorf("mounts: %v", m)
		}
		return nil
	})
}

// TestDeploy_registerPolicyRegistersOnlyThePlugin: a token of
// deploy/policies/register.hcl registers vault-plugin-registry as the
// register unit does, and nothing else.
func TestDeploy_registerPolicyRegistersOnlyThePlugin(t *testing.T) {
	v := StartVault(t)
	token := policyToken(t, v, "vault-plugin-registry-register", "register.hcl")
	sum := sha256Hex(readBytes(t, bins.plugin))
	// The unit's ExecStart line, on a catalog without the plugin.
	v.CLI(t, "plugin", "deregister", "-version="+pluginVersion, "secret", pluginName)
	register := []string{"plugin", "register", "-sha256=" + sum, "-version=" + pluginVersion, "-command=" + pluginName, "secret", pluginName}
	if out, errOut, err := v.tryCLIWithToken(token, register...); err != nil {
		t.Fatalf("vault %s with register.hcl: %v %s%s", strings.Join(register, " "), err, out, errOut)
	}
	if info := v.CLI(t, "plugin", "info", "-version="+pluginVersion, "secret", pluginName); !strings.Contains(info, sum) {
		t.Errorf("the plugin is not registered:\n%s", info)
	}
	v.EnableService(t, "registry") // the registered plugin serves
	for _, args := range [][]string{
		{"plugin", "register", "-sha256=" + sum, "-version=" + pluginVersion, "-command=" + pluginName, "secret", "other-plugin"},
		{"plugin", "register", "-sha256=" + sum, "-version=" + pluginVersion, "-command=" + pluginName, "auth", pluginName},
		{"plugin", "deregister", "-version=" + pluginVersion, "secret", pluginName},
		{"plugin", "info", "-version=" + pluginVersion, "secret", pluginName},
		{"secrets", "enable", "-path=registry", pluginName},
		{"secrets", "list"},
		{"policy", "read", "vault-plugin-registry-register"},
		{"token", "create"},
	} {
		out, errOut, err := v.tryCLIWithToken(token, args...)
		if err == nil || !strings.Contains(out+errOut, "permission denied") {
			t.Errorf("vault %s with register.hcl: want permission denied, got %v: %s", strings.Join(args, " "), err, truncate([]byte(out+errOut), 300))
		}
	}
}
