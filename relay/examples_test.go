package relay

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// The configurations in examples/ that users copy.
var exampleFiles = []string{"relay.yml", "ldap.yml", "ci-jwt.yml", "ha.yml"}

// TestExamples_loadWithTheRelaysLoader: each example is a configuration the
// relay starts with: LoadConfig (unknown keys, types and ranges refused)
// with no environment, so the file alone must be complete.
func TestExamples_loadWithTheRelaysLoader(t *testing.T) {
	for _, name := range exampleFiles {
		cfg, err := LoadConfig(filepath.Join("..", "examples", name), func(string) string { return "" })
		if err != nil {
			t.Errorf("examples/%s: %v", name, err)
			continue
		}
		switch name {
		case "ldap.yml":
			if len(cfg.Identity.PasswordMounts) == 0 {
				t.Errorf("examples/ldap.yml sets no identity.password_mounts")
			}
		case "ha.yml":
			if len(cfg.VaultAddresses()) < 3 {
				t.Errorf("examples/ha.yml names %d Vault nodes, want a cluster's", len(cfg.VaultAddresses()))
			}
		case "ci-jwt.yml":
			if cfg.identityDefaults().VaultTokenUser == "" || len(cfg.Identity.JWTLogins) == 0 {
				t.Errorf("examples/ci-jwt.yml: want vault_token_user and jwt_logins")
			}
		}
	}
}

// TestExamples_relayYmlNamesEverySetting: examples/relay.yml, the full
// reference, names every key of the configuration (each yaml tag of
// Config and the structs under it, set or commented out), so a setting
// added without documenting it fails here.
func TestExamples_relayYmlNamesEverySetting(t *testing.T) {
	doc, err := os.ReadFile("../examples/relay.yml")
	if err != nil {
		t.Fatal(err)
	}
	// A key line, also commented out or a list item's first key:
	// "  key:", "  #key:", "  - key:".
	mentioned := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^\s*#?\s*(?:-\s*)?([a-z_]+):`).FindAllStringSubmatch(string(doc), -1) {
		mentioned[m[1]]++
	}
	paths := yamlKeys(reflect.TypeOf(Config{}), "")
	if len(paths) < 25 {
		t.Fatalf("found only %d keys in Config: %v", len(paths), paths)
	}
	want := map[string]int{}
	for _, p := range paths {
		want[p[strings.LastIndexByte(p, '.')+1:]]++
	}
	for _, p := range paths {
		leaf := p[strings.LastIndexByte(p, '.')+1:]
		if mentioned[leaf] < want[leaf] {
			t.Errorf("examples/relay.yml does not describe %s (key %q on %d lines, the configuration has it %d times)",
				p, leaf, mentioned[leaf], want[leaf])
		}
	}
}

// yamlKeys lists the dotted paths of the yaml keys of a struct type,
// sections, settings and the keys of a list's items alike; `yaml:"-"` fields come from the
// environment and are skipped.
func yamlKeys(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		path := prefix + name
		keys = append(keys, path)
		ft := f.Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem() // a list of mappings: the keys of an item
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeOf(Duration(0)) {
			keys = append(keys, yamlKeys(ft, path+".")...)
		}
	}
	return keys
}
