// Command godoauth-relay serves godoauth's token endpoint from the
// vault-plugin-registry mounts, reading godoauth's YAML file unchanged.
// `godoauth-relay migrate` moves godoauth's users and keys into a mount;
// `godoauth-relay healthcheck` is the container image's health check.
package main

import (
	"os"

	"github.com/vault-registry/vault-plugin-registry/relay"
	"github.com/vault-registry/vault-plugin-registry/relay/migrate"
)

func main() {
	commands := map[string]relay.Command{"migrate": migrate.Main, "healthcheck": relay.Healthcheck}
	os.Exit(relay.Main(os.Args[1:], os.Stdout, os.Stderr, commands))
}
