// Command docker-credential-vault-registry is a docker credential helper:
// with {"credHelpers": {"<registry host>": "vault-registry"}} in docker's
// config.json, the user's Vault login is the registry login.
package main

import (
	"os"

	"github.com/vault-registry/vault-plugin-registry/credhelper"
)

func main() {
	os.Exit(credhelper.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
